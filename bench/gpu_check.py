"""One short GPU check, no download: random-initialised models of two sizes, 20 packed bf16 training
steps each under the deepspeed launcher, and tree scoring against the naive forward on the GPU.

Run through scripts/gpu_check.sh (which installs what the GPU machine lacks). Writes one JSON
report: per size the parameter count, tokens/s, peak GPU memory, and the largest difference
between tree-scored and naively scored label log-probabilities.

    python bench/gpu_check.py --out OUT/gpu_check.json [--dry-run] [--steps 20]

--dry-run (any machine, CPU): builds both configs on the meta device (parameter counts), checks
that deepspeed, transformers and peft import, and prepares the demo data; it trains nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny_model: a tokenizer trained on the spot, no download

SIZES = {  # LlamaConfig keyword arguments
    "smollm2-135m-like": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                              num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama2-7b-like": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
}


def model_folder(name: str, out: Path) -> Path:
    """A random-initialised model of size `name` in bf16, with the tiny test tokenizer (its ids fit any vocab)."""
    import torch
    from tiny_model import make_tiny_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    make_tiny_model(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    config = LlamaConfig(**SIZES[name], max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    for f in out.glob("*.safetensors"):
        f.unlink()
    model.save_pretrained(str(out))
    return out


def train(model: Path, data: Path, run: Path, steps: int) -> dict:
    """`steps` packed bf16 steps of stage joint under the deepspeed launcher, one GPU."""
    cmd = ["deepspeed", "--num_gpus", "1", "--module", "instructerc", "train", "--stage", "joint", "--data", str(data),
           "--model", str(model), "--out", str(run)]
    for s in ("precision=bf16", f"stop_after={steps}", "batch_size=8", "checkpoint_every=0", "eval.max_records=8",
              "max_length=1024"):
        cmd += ["--set", s]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    tokens, seconds = sum(r["tokens"] for r in rows), sum(r["seconds"] for r in rows)
    return {"steps": len(rows), "tokens_per_s": round(tokens / seconds, 1), "wall_s": round(time.perf_counter() - t0, 1),
            "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"], "memory": memory_of(run)}


def memory_of(run: Path) -> dict:
    """The peak memory the run recorded: summary.json at the end, the train log's note otherwise."""
    summary = run / "summary.json"
    return {k: v for k, v in json.loads(summary.read_text()).items() if k.startswith("peak")} if summary.is_file() else {}


def tree_vs_naive(model_dir: Path, data: Path, n: int = 16) -> dict:
    """Largest |tree - naive| label log-probability over the first `n` dev prompts, fp32 on the GPU."""
    import torch

    from instructerc import decode, models
    from instructerc.records import load_records

    tok = models.load_tokenizer(model_dir)
    model = models.load_model(model_dir, dtype=torch.float32).to("cuda").eval()
    records = load_records(data / "dev.jsonl", tasks=("erc",))[:n]
    prompts = [models.prompt_ids(tok, r.prompt, r.chat) for r in records]
    answers = [[models.answer_ids(tok, lab) for lab in r.labels] for r in records]
    with torch.inference_mode():
        tree = decode.label_logprobs(model, prompts, answers)
        naive = [decode.naive_label_logprobs(model, p, a) for p, a in zip(prompts, answers)]
    diff = max(abs(x - y) for t, v in zip(tree, naive) for x, y in zip(t, v))
    return {"prompts": len(records), "max_abs_difference": diff}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the JSON report")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--dry-run", action="store_true", help="configs, imports and data only; no GPU needed")
    args = ap.parse_args()

    import deepspeed
    import peft
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    report = {"dry_run": args.dry_run, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                                    "peft": peft.__version__, "deepspeed": deepspeed.__version__},
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "sizes": {}}
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no GPU visible to torch (use --dry-run on a CPU machine)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        subprocess.run([sys.executable, "-m", "instructerc", "prepare", "--dataset", "meld", "--raw-dir",
                        str(REPO / "data" / "demo"), "--out", str(data)], check=True, capture_output=True)
        report["data_records"] = sum(1 for _ in open(data / "train.jsonl"))
        for name in args.sizes:
            with torch.device("meta"):
                params = sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**SIZES[name])).parameters())
            entry = {"parameters": params}
            if not args.dry_run:
                folder = model_folder(name, tmp / name)
                entry["train"] = train(folder, data, tmp / f"run_{name}", args.steps)
                if name == "smollm2-135m-like":
                    entry["tree_vs_naive_fp32"] = tree_vs_naive(folder, data)
                torch.cuda.empty_cache()
            report["sizes"][name] = entry
            print(f"{name}: {json.dumps(entry)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report -> {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
