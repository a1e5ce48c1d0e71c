"""The trainer on the tiny model: loss mask, beta, config overrides, resume, run folder, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from instructerc import allocator, batching, cli
from instructerc.checkpoints import load_weights_only
from instructerc.errors import UserError
from instructerc.models import answer_ids, load_model, load_tokenizer, prompt_ids
from instructerc.train import free_port, train
from instructerc.train_config import DEFAULTS, resolve_config
from train_fixtures import LABELS, record, write_data

REPO = Path(__file__).resolve().parents[1]
QUICK = ["batch_size=4", "micro_batch=2", "epochs.speaker=2", "epochs.joint=1", "epochs.plain=1",
         "checkpoint_every=2", "log_every=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def lora_model(model_dir, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(model_dir), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
        init_lora_weights=False))  # random B too: a non-zero adapter, so gradients reach both A and B
    return model


# --- configuration ---------------------------------------------------------------------------

def test_overrides_reach_nested_keys_and_keep_the_rest(tmp_path):
    cfg = resolve_config(REPO / "configs" / "meld.yaml", ["lr=1e-4", "lora.r=8", "epochs.joint=2", "lora.target_modules=[q_proj]"])
    assert cfg["lr"] == 1e-4 and cfg["lora"]["r"] == 8 and cfg["epochs"]["joint"] == 2
    assert cfg["lora"]["target_modules"] == ["q_proj"]
    assert cfg["lora"]["alpha"] == 16 and cfg["epochs"]["speaker"] == 3  # untouched siblings


def test_every_shipped_config_is_valid_and_follows_the_paper():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = resolve_config(path)
        assert set(cfg) == set(DEFAULTS), path
        assert cfg["lora"]["dropout"] == 0.05 and cfg["precision"] != "fp16" and cfg["packing"] == "dialogue"
        if path.stem != "demo":  # the demo trains a 135M model briefly, at a higher learning rate
            assert cfg["lora"]["r"] == 16 and cfg["lora"]["alpha"] == 16 and cfg["batch_size"] == 32
            assert cfg["lr"] == 2e-4


def test_small_configs_differ_from_the_recipe_only_in_what_the_sweep_chose():
    for name in ("meld", "iemocap", "emorynlp"):
        small, recipe = resolve_config(REPO / "configs" / "small" / f"{name}.yaml"), resolve_config(REPO / "configs" / f"{name}.yaml")
        assert (small["lr"], small["batch_size"], small["epochs"]) == (3e-3, 16, {"speaker": 1, "joint": 2, "plain": 2})
        differ = {k for k in DEFAULTS if small[k] != recipe[k]}
        # max_length, LoRA shape, beta: the dataset's recipe; how steps mix dialogues: chosen on dev
        mixing = {"iemocap": {"packing"}, "emorynlp": {"dialogue_run"}}.get(name, set())
        assert differ == {"lr", "batch_size", "epochs"} | mixing, name
    assert resolve_config(REPO / "configs" / "small" / "iemocap.yaml")["packing"] == "none"
    assert resolve_config(REPO / "configs" / "small" / "emorynlp.yaml")["dialogue_run"] == 1


def test_paper_configs_are_the_released_recipe():
    for name, max_length in (("meld", 1024), ("emorynlp", 1024), ("iemocap", 1200)):
        cfg = resolve_config(REPO / "configs" / "paper" / f"{name}.yaml")
        assert set(cfg) == set(DEFAULTS) and cfg["max_length"] == max_length
        assert cfg["lora"] == {"r": 16, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj"]}
        assert (cfg["lr"], cfg["adam_betas"], cfg["schedule"], cfg["warmup_ratio"], cfg["batch_size"]) == \
            (2e-4, [0.9, 0.95], "linear", 0.1, 32)
        assert cfg["epochs"] == {"speaker": 3, "joint": 15, "plain": 6} and cfg["beta"] == 1.0


def test_extends_merges_the_base_first_and_refuses_a_circle(tmp_path):
    (tmp_path / "base.yaml").write_text("lr: 1e-4\nbatch_size: 16\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nbatch_size: 8\n")
    cfg = resolve_config(tmp_path / "child.yaml")
    assert (cfg["lr"], cfg["batch_size"]) == (1e-4, 8)
    (tmp_path / "base.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(UserError, match="circle"):
        resolve_config(tmp_path / "child.yaml")
    (tmp_path / "child.yaml").write_text("extends: nosuch.yaml\n")
    with pytest.raises(UserError, match="nosuch.yaml: config file not found"):
        resolve_config(tmp_path / "child.yaml")


@pytest.mark.parametrize("bad", ["lora.rank=8", "learning_rate=1", "nokey", "epochs.stage3=1", "beta=-0.1",
                                 "window=12", "finetune=qlora", "logging=wandb", "adam_betas=[0.9]", "adam_betas=[0.9,1.5]", "adam_betas=0.9"])
def test_unknown_or_malformed_override_is_a_user_error(bad):
    with pytest.raises(UserError):
        resolve_config(None, [bad])


def test_unknown_key_in_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nlora: {r: 8, rnak: 2}\n")
    with pytest.raises(UserError, match=r"c\.yaml.*lora\.rnak"):
        resolve_config(path)


def test_fp16_is_refused():
    with pytest.raises(UserError, match="fp16"):
        resolve_config(None, ["precision=fp16"])


@pytest.mark.parametrize("bad, message", [("packing=dialog", "packing must be dialogue or none"),
                                          ("precision=half", "precision must be"), ("max_pack_tokens=0", "max_pack_tokens"),
                                          ("dialogue_run=-1", "dialogue_run must be 0")])
def test_bad_packing_or_precision_is_a_user_error(bad, message):
    with pytest.raises(UserError, match=message):
        resolve_config(None, [bad])


@pytest.mark.parametrize("fast, want", [(True, "bf16"), (False, "fp32")])
def test_precision_auto_takes_bf16_only_where_it_is_native(monkeypatch, fast, want):
    from instructerc import models, train as train_module

    monkeypatch.setattr(models, "bf16_is_fast", lambda: fast)
    assert train_module.precision(resolve_config(None)) == want
    assert train_module.precision(resolve_config(None, ["precision=fp32"])) == "fp32"
    assert train_module.precision(resolve_config(None, ["precision=bf16"])) == "bf16"
    assert models.fast_dtype() == ("bfloat16" if fast else "float32")


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_learning_rate_warms_up_then_follows_the_schedule(schedule):
    from instructerc.train import lr_lambda

    f = lr_lambda(resolve_config(None, ["warmup_ratio=0.1", f"schedule={schedule}"]), total_steps=40)
    factors = [f(s) for s in range(40)]
    assert factors[:4] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])  # 4 warm-up steps, linear
    assert factors[4] == pytest.approx(1.0)
    after = factors[4:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    if schedule == "constant":
        assert set(after) == {1.0}
    else:
        assert after[-1] < 0.05 and after[18] == pytest.approx(0.5, abs=0.05)  # half-way down at mid-decay


# --- batches and the loss -------------------------------------------------------------------

def test_micro_batch_plan_covers_every_example_splits_ranks_and_is_reproducible():
    lengths = [5 + (i * 7) % 13 for i in range(23)]
    plan = batching.micro_batch_plan(lengths, micro_batch=2, accum=3, world=2, seed=1, epoch=0)
    assert all(len(step) == 2 and all(len(r) == 3 for r in step) for step in plan)
    flat = [i for step in plan for r in step for mb in r for i in mb]
    assert set(flat) == set(range(23)) and len(flat) % 12 == 0  # padded to full steps
    assert plan == batching.micro_batch_plan(lengths, 2, 3, 2, seed=1, epoch=0)
    assert plan != batching.micro_batch_plan(lengths, 2, 3, 2, seed=1, epoch=1)


def test_answer_mask_covers_exactly_the_answer_tokens(tokenizer):
    recs = [record("erc", i, LABELS[i], LABELS) for i in range(3)]
    examples = [batching.encode(tokenizer, r, 1024) for r in recs]
    batch = batching.collate(examples, tokenizer.pad_token_id)
    for row, r in enumerate(recs):
        ans = answer_ids(tokenizer, r.target)
        ids = batch["input_ids"][row][batch["answer_mask"][row]].tolist()
        assert ids == ans
        n = len(prompt_ids(tokenizer, r.prompt)) + len(ans)
        assert int(batch["attention_mask"][row].sum()) == n


def test_loss_is_the_mean_nll_of_answer_tokens_only(tiny_model_dir, tokenizer):
    model = lora_model(tiny_model_dir).eval()
    recs = [record("erc", i, LABELS[i], LABELS) for i in range(4)]
    examples = [batching.encode(tokenizer, r, 1024) for r in recs]
    batch = batching.collate(examples, tokenizer.pad_token_id)
    got = batching.example_losses(model, batch)
    for row, e in enumerate(examples):  # reference: one unpadded sequence, HF's own masked loss
        ids = torch.tensor([e.input_ids])
        labels = ids.clone()
        labels[0, : len(e.input_ids) - e.n_answer] = -100
        want = model(input_ids=ids, labels=labels).loss
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-5)


def test_truncation_keeps_the_end_of_the_prompt_and_the_whole_answer(tokenizer):
    r = record("erc", 6, "sad", LABELS)
    full = batching.encode(tokenizer, r, 10_000)
    cut = batching.encode(tokenizer, r, 30)
    assert cut.truncated and not full.truncated and len(cut.input_ids) == 30
    assert cut.input_ids == full.input_ids[-30:] and cut.n_answer == full.n_answer


def _grads(model, batch, weights):
    model.zero_grad()
    (batching.example_losses(model, batch) * torch.tensor(weights)).sum().backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_beta_scales_the_prediction_gradient(tiny_model_dir, tokenizer, beta):
    """grad(L_erc + beta * L_predict) == grad(L_erc) + beta * grad(L_predict), each task averaged
    over its own examples, in one mixed batch."""
    model = lora_model(tiny_model_dir)
    recs = [record("erc", 0, "sad", LABELS), record("predict", 1, "joyful", LABELS),
            record("erc", 2, "neutral", LABELS), record("predict", 3, "angry", LABELS), record("predict", 4, "fear", LABELS)]
    examples = [batching.encode(tokenizer, r, 1024) for r in recs]
    tasks = [e.task for e in examples]
    batch = batching.collate(examples, tokenizer.pad_token_id)
    scale = batching.task_scales(tasks, {"erc": 1.0, "predict": beta})
    assert scale == pytest.approx({"erc": 1 / 2, "predict": beta / 3})
    joint = _grads(model, batch, [scale[t] for t in tasks])
    erc = _grads(model, batch, [1 / 2 if t == "erc" else 0.0 for t in tasks])
    pred = _grads(model, batch, [1 / 3 if t == "predict" else 0.0 for t in tasks])
    assert any(g.abs().sum() > 0 for g in pred)
    for j, e, p in zip(joint, erc, pred):
        torch.testing.assert_close(j, e + beta * p, rtol=1e-4, atol=1e-7)
    # and beta really matters: the joint gradient is not the ERC gradient alone
    assert any(not torch.allclose(j, e) for j, e in zip(joint, erc))


# --- whole runs ------------------------------------------------------------------------------

def run_stage(tmp, name, data, model, stage="speaker", extra=(), **kw):
    cfg = resolve_config(None, QUICK + list(extra))
    return train(cfg, stage=stage, data=data, model_spec=str(model), out=tmp / name, **kw)


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_task_without_examples_in_a_step_logs_no_loss():
    from instructerc.train import StepStats

    stats = StepStats(tasks=("erc", "predict"), loss_sum={"erc": 3.0, "predict": 0.0}, examples={"erc": 2, "predict": 0})
    assert stats.task_losses() == {"loss_erc": 1.5, "loss_predict": None}


def test_run_folder_and_two_stages(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    from peft import PeftModel

    from instructerc.trie import Trie

    def dense_mask(self):
        raise AssertionError("the trainer's packs must run the sparse tree attention, not a dense mask")

    monkeypatch.setattr(Trie, "ancestor_mask", dense_mask)

    s1 = run_stage(tmp_path, "speaker", data_dir, tiny_model_dir, extra=["lr=1e-3"])
    run1 = tmp_path / "speaker"
    assert s1["steps"] == 6 and s1["world_size"] == 1
    for name in ("best", "final"):
        PeftModel.from_pretrained(load_model(tiny_model_dir), str(run1 / name))
    cfg = yaml.safe_load((run1 / "config.yaml").read_text())
    assert cfg["lr"] == 1e-3 and cfg["stage"] == "speaker" and cfg["labels"] == list(LABELS)
    rows = [json.loads(x) for x in (run1 / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss_speaker", "lr", "tokens_per_s", "computed_tokens"} <= set(rows[0])
    # one dev evaluation per epoch, of the warm-up's own task: an ERC score would judge a speaker-only adapter
    dev = [r for r in rows if "dev_n" in r]
    assert len(dev) == 2 and all("dev_speaker_accuracy" in r and "dev_weighted_f1" not in r for r in dev)
    assert all(r["dev_n"] == 6 for r in dev) and "dev speaker accuracy" in (run1 / "train.log").read_text()
    from instructerc.train import lr_lambda  # the logged learning rate is the schedule's, step by step
    factor = lr_lambda(resolve_config(None, QUICK), s1["steps"])
    assert [r["lr"] for r in rows if "lr" in r] == pytest.approx([1e-3 * factor(r["step"]) for r in rows if "lr" in r])
    assert "done:" in (run1 / "train.log").read_text()
    assert (run1 / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    s2 = run_stage(tmp_path, "joint", data_dir, tiny_model_dir, stage="joint", init_adapter=run1)
    rows = [json.loads(x) for x in (tmp_path / "joint" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_erc", "loss_predict"} <= set(rows[0])
    for r in (r for r in rows if "loss" in r):  # L_erc + beta L_predict over the tasks the step holds
        assert r["loss"] == pytest.approx((r["loss_erc"] or 0.0) + 0.1 * (r["loss_predict"] or 0.0))
    assert any(r.get("loss_predict") is not None for r in rows)
    assert s2["train_examples"] == 24  # 12 erc + 12 predict
    # it continued from the stage-1 adapter: stage-1 B matrices are non-zero, a fresh LoRA's are zero
    b = {k: v for k, v in adapter_tensors(run1 / "best").items() if "lora_B" in k}
    assert all(v.abs().sum() > 0 for v in b.values())

    # beta = 0, the ablation without emotion prediction: ERC records only, no zero-weight work
    s3 = run_stage(tmp_path, "no-predict", data_dir, tiny_model_dir, stage="joint", extra=["beta=0"],
                   init_adapter=run1)
    rows = [json.loads(x) for x in (tmp_path / "no-predict" / "metrics.jsonl").read_text().splitlines()]
    assert s3["train_examples"] == 12 and "loss_predict" not in rows[0]


def test_resume_after_a_stop_reaches_the_same_adapter(tmp_path, data_dir, tiny_model_dir):
    full = run_stage(tmp_path, "full", data_dir, tiny_model_dir)
    assert run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=4"]) == {}
    assert not (tmp_path / "cut" / "final").exists()
    # the checkpoint holds the adapter only: not the tiny model's tied (frozen) lm_head.weight
    tag = json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())["tag"]
    saved = load_weights_only(tmp_path / "cut" / "checkpoints" / tag / "mp_rank_00_model_states.pt")["module"]
    assert saved and all("lora_" in name for name in saved), sorted(saved)
    resumed = run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=4"], resume=True)
    assert resumed["adapter_sha256"] == full["adapter_sha256"]
    # times and speeds cover both segments, not only the one after --resume
    assert resumed["tokens"] == full["tokens"] and resumed["computed_tokens"] == full["computed_tokens"]
    assert resumed["seconds"] > resumed["segment_seconds"] and full["seconds"] == full["segment_seconds"]
    assert resumed["tokens_per_s"] == pytest.approx(resumed["tokens"] / resumed["step_seconds"])
    a, b = adapter_tensors(tmp_path / "full" / "final"), adapter_tensors(tmp_path / "cut" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    full_steps = [json.loads(x)["step"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert steps == full_steps  # nothing logged twice


def test_best_is_the_best_dev_epoch(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    """RUN/best holds the adapter of the epoch with the highest dev weighted-F1, not the last."""
    from peft import get_peft_model_state_dict

    from instructerc import train as train_module

    scores, adapters = iter([0.2, 0.6, 0.4]), []
    predict = train_module.dev_predictions

    def watched(model, tokenizer, records, cfg):
        adapters.append({k: v.clone() for k, v in get_peft_model_state_dict(model).items()})
        return predict(model, tokenizer, records, cfg)

    def scripted(preds, labels, task):
        return {"dev_weighted_f1": next(scores), "dev_accuracy": 0.0, "dev_macro_f1": 0.0, "dev_label_nll": 0.0, "dev_n": 1}

    monkeypatch.setattr(train_module, "dev_predictions", watched)
    monkeypatch.setattr(train_module, "dev_scores", scripted)
    summary = run_stage(tmp_path, "best", data_dir, tiny_model_dir, stage="plain", extra=["epochs.plain=3", "lr=1e-2"])
    assert summary["best"]["epoch"] == 2
    assert json.loads((tmp_path / "best" / "best" / "trained.json").read_text())["epoch"] == 2
    saved = adapter_tensors(tmp_path / "best" / "best")
    want = {k.replace(".default", ""): v for k, v in adapters[1].items()}
    assert saved.keys() == want.keys() and all(torch.equal(saved[k], want[k]) for k in saved)
    assert not all(torch.equal(saved[k], adapters[2][k]) for k in saved if k in adapters[2])


def test_a_dev_split_answered_with_one_label_is_logged_as_a_collapse(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    """Every dev answer one label (the gold labels varied) gets a warning on the epoch's log line; a
    split answered with two labels does not."""
    from instructerc import train as train_module

    predict = train_module.dev_predictions
    answers = iter(["one label", "two labels"])

    def scripted(model, tokenizer, records, cfg):
        preds = predict(model, tokenizer, records, cfg)
        first = preds[0].gold
        other = next(p.gold for p in preds if p.gold != first)
        one_label = next(answers) == "one label"
        return [dataclasses.replace(p, pred=first if one_label or i else other) for i, p in enumerate(preds)]

    monkeypatch.setattr(train_module, "dev_predictions", scripted)
    run_stage(tmp_path, "collapse", data_dir, tiny_model_dir, stage="plain", extra=["epochs.plain=2"])
    epochs = [line for line in (tmp_path / "collapse" / "train.log").read_text().splitlines() if ": dev weighted-F1" in line]
    assert len(epochs) == 2
    assert "warning: every dev answer is" in epochs[0] and "collapsed run" in epochs[0]
    assert "warning" not in epochs[1]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_checkpoint_then_resume_to_the_same_adapter(tmp_path, data_dir, tiny_model_dir, sig):
    """What a scheduler sends before it kills (SIGTERM), or a Ctrl-C: the run checkpoints at the next
    step boundary, says how to resume, exits 128 + the signal; --resume ends with the adapter of an
    uninterrupted run (dropout 0)."""
    sets = ["batch_size=4", "epochs.speaker=8", "lora.dropout=0", "checkpoint_every=0", "log_every=1"]
    whole = run_stage(tmp_path, "whole", data_dir, tiny_model_dir, extra=sets)
    cmd = [str(Path(sys.executable).parent / "instructerc"), "train", "--stage", "speaker", "--data", str(data_dir),
           "--model", str(tiny_model_dir), "--out", str(tmp_path / "cut")] + [x for s in sets for x in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {signal.Signals(sig).name}" in err and "--resume" in err
    assert (tmp_path / "cut" / "checkpoints" / "latest.json").is_file() and not (tmp_path / "cut" / "final").exists()
    done = launch(cmd + ["--resume"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert cut["steps"] == whole["steps"] and cut["adapter_sha256"] == whole["adapter_sha256"]
    # the command line ran under tcmalloc where there is one (this test process runs the system malloc)
    assert cut["allocator"] == ("tcmalloc" if allocator.find_tcmalloc() else "system")


def test_resume_with_changed_settings_is_refused(tmp_path, data_dir, tiny_model_dir):
    assert run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2"]) == {}
    with pytest.raises(UserError, match=r"differ.*\blr\b"):
        run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2", "lr=5e-3"], resume=True)
    with pytest.raises(UserError, match="differ.*packing"):
        run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2", "packing=none"], resume=True)
    with pytest.raises(UserError, match=r"differ.*eval\.max_records"):  # the dev sample decides the best epoch
        run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2", "eval.max_records=3"], resume=True)


def test_resume_may_change_how_a_run_is_scored_and_logged(tmp_path, data_dir, tiny_model_dir):
    """eval.every and eval.batch_size change which epochs are scored and how fast, not the training:
    the resumed run ends with the uninterrupted run's adapter and says what changed."""
    whole = run_stage(tmp_path, "whole", data_dir, tiny_model_dir)
    assert run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2"]) == {}
    resumed = run_stage(tmp_path, "cut", data_dir, tiny_model_dir, resume=True,
                        extra=["eval.every=2", "eval.batch_size=3"])
    assert resumed["adapter_sha256"] == whole["adapter_sha256"]
    log = (tmp_path / "cut" / "train.log").read_text()
    assert "--resume changes eval.every: 1 -> 2" in log and "--resume changes eval.batch_size: 8 -> 3" in log
    assert "stop_after" not in log.split("resumed from step")[-1]
    assert yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())["eval"]["every"] == 2


def test_a_warm_up_on_data_without_dev_speaker_records_keeps_its_last_epoch(tmp_path, tiny_model_dir):
    """Folders prepared before dev held speaker records: the warm-up runs, says it was not scored, and
    RUN/best is its last epoch (what the joint stage starts from)."""
    old = write_data(tmp_path / "old", dev_tasks=("erc",))
    summary = run_stage(tmp_path, "warm", old, tiny_model_dir)
    rows = [json.loads(x) for x in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    assert not any("dev_n" in r for r in rows)
    assert summary["best"] == {"epoch": 2, "step": summary["steps"]}
    assert json.loads((tmp_path / "warm" / "best" / "trained.json").read_text())["epoch"] == 2
    log = (tmp_path / "warm" / "train.log").read_text()
    assert "dev not scored (dev.jsonl has no speaker records" in log
    assert "; dev not scored, kept epoch 2; adapters:" in log and "nan" not in log


def test_eval_every_scores_every_nth_epoch_and_the_last(tmp_path, data_dir, tiny_model_dir):
    summary = run_stage(tmp_path, "every", data_dir, tiny_model_dir, stage="plain",
                        extra=["epochs.plain=3", "eval.every=2"])
    rows = [json.loads(x) for x in (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "dev_weighted_f1" in r] == [2, 3]
    assert summary["best"]["epoch"] in (2, 3) and (tmp_path / "every" / "best").is_dir()
    assert "epoch 1/3: dev not scored (eval.every 2)" in (tmp_path / "every" / "train.log").read_text()
    with pytest.raises(UserError, match="eval.every must be a positive integer"):
        resolve_config(None, ["eval.every=0"])


def test_a_run_saved_before_a_new_setting_still_resumes(tmp_path, data_dir, tiny_model_dir):
    """config.yaml of an older version lacks keys added since (here eval.every): they take their defaults."""
    whole = run_stage(tmp_path, "whole", data_dir, tiny_model_dir)
    assert run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2"]) == {}
    saved = yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())
    del saved["eval"]["every"]
    (tmp_path / "cut" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    resumed = run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2"], resume=True)
    assert resumed["adapter_sha256"] == whole["adapter_sha256"]


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped", "hostile pickle"])
def test_a_damaged_or_hostile_checkpoint_is_refused_by_name(tmp_path, data_dir, tiny_model_dir, damage):
    """--resume checks the files against the sizes and sha256 latest.json recorded, and loads every .pt
    weights-only before DeepSpeed unpickles it: a pickle that runs code is refused, and never runs."""
    from instructerc.fileio import file_records

    assert run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2"]) == {}
    root = tmp_path / "cut" / "checkpoints"
    latest = json.loads((root / "latest.json").read_text())
    assert set(latest["files"]) >= {"trainer_state.json", "rng_rank0.json", "mp_rank_00_model_states.pt"}
    folder = root / latest["tag"]
    victim = next(folder.glob("*optim_states.pt"))
    marker = tmp_path / "code-ran"
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "flipped":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    else:  # someone who can write the folder rewrites latest.json too: the digests match, the content does not pass
        torch.save({"optimizer_state_dict": _RunsCode(marker)}, victim)
        (root / "latest.json").write_text(json.dumps({"tag": latest["tag"], "files": file_records(folder)}))
    message = {"missing": "missing", "truncated": "bytes", "flipped": "sha256 differs", "hostile pickle": "refused"}
    with pytest.raises(UserError, match=message[damage]) as e:
        run_stage(tmp_path, "cut", data_dir, tiny_model_dir, extra=["stop_after=2"], resume=True)
    assert victim.name in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_packing_none_and_bf16_runs_train_too(tmp_path, data_dir, tiny_model_dir):
    """The per-record micro-batches stay available; bf16 keeps the LoRA weights in fp32."""
    a = run_stage(tmp_path, "none", data_dir, tiny_model_dir, extra=["packing=none"])
    b = run_stage(tmp_path, "bf16", data_dir, tiny_model_dir, extra=["precision=bf16"])
    assert a["packing"] == "none" and b["precision"] == "bf16" and a["steps"] == b["steps"] == 6
    assert a["computed_tokens"] >= a["tokens"]  # padding is computed too
    assert all(v.dtype == torch.float32 for v in adapter_tensors(tmp_path / "bf16" / "final").values())


def test_tensorboard_logging_writes_the_metrics_as_scalars(tmp_path, data_dir, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_stage(tmp_path, "tb", data_dir, tiny_model_dir, stage="joint", extra=["logging=tensorboard"])
    events = EventAccumulator(str(tmp_path / "tb" / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "loss/erc", "loss/predict", "lr", "dev/weighted_f1"} <= tags
    rows = [json.loads(x) for x in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([r["lr"] for r in rows if "lr" in r])


def test_full_finetuning_trains_every_weight_and_saves_a_model_folder(tmp_path, data_dir, tiny_model_dir, capsys):
    """`finetune: full` (the paper's all-parameters rows): no adapter, every weight moves; RUN/best
    is a model folder (weights + tokenizer) that `eval --model` loads, and a second stage starts from it."""
    from safetensors.torch import load_file

    first = run_stage(tmp_path, "full", data_dir, tiny_model_dir, extra=["finetune=full"])
    assert first["steps"] == 6
    base = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    tuned = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    moved = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert any("mlp" in k for k in moved) and any("embed" in k for k in moved)  # not only attention, no LoRA
    assert not (tmp_path / "full" / "best" / "adapter_config.json").exists()
    assert (tmp_path / "full" / "best" / "tokenizer_config.json").is_file()
    second = run_stage(tmp_path, "full2", data_dir, tiny_model_dir, stage="joint", extra=["finetune=full"],
                       init_adapter=tmp_path / "full" / "best")
    assert second["steps"] > 0
    out = tmp_path / "eval"
    assert cli.main(["eval", "--data", str(data_dir), "--split", "dev", "--model", str(tmp_path / "full2" / "best"),
                     "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["counts"]["n"] == 6
    run_stage(tmp_path, "lora", data_dir, tiny_model_dir, extra=["epochs.speaker=1"])
    capsys.readouterr()
    code, err = _cli(capsys, "--stage", "joint", "--data", data_dir, "--model", tiny_model_dir, "--out", tmp_path / "x",
                     "--set", "finetune=full", "--init-adapter", tmp_path / "lora" / "best")
    assert code == 2 and len(err) == 1 and "full model folder" in err[0] and not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("pack", [2048, 1], ids=["one-pack-per-step", "one-record-per-pack"])
def test_two_ranks_match_one_rank(tmp_path, data_dir, tiny_model_dir, pack):
    """`deepspeed --num_gpus 2` (2 CPU ranks): both ranks end equal (the trainer asserts it), and
    with dropout off the adapter equals the one-process run's: the loss is normalised over the
    whole step whatever the number of ranks. With one pack per step the second rank runs empty
    fillers; with one record per pack each rank runs two packs of its own per step."""
    # fp32: on a bf16 CPU (auto = bf16) a rank's single thread rounds its bf16 products otherwise
    # than two threads do, so only fp32 makes the equality a test of the step's arithmetic
    sets = QUICK + ["lora.dropout=0", f"max_pack_tokens={pack}", "precision=fp32"]
    one = run_stage(tmp_path, "one", data_dir, tiny_model_dir, extra=sets[len(QUICK):])
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--master_port", str(port), "--num_gpus", "2",
           "instructerc", "train",
           "--stage", "speaker", "--data", str(data_dir), "--model", str(tiny_model_dir), "--out", str(tmp_path / "two")]
    for s in sets:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and two["steps"] == one["steps"]
    # DeepSpeed's CPU all-reduce buffers (69 MB a rank) leave /dev/shm with the ranks
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    a, b = adapter_tensors(tmp_path / "one" / "final"), adapter_tensors(tmp_path / "two" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert (one["computed_tokens"] < one["tokens"]) == (pack > 1)  # records share a trie only in big packs


def launch(cmd: list[str], run: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


SHUTDOWN_PROBE = """
import atexit, sys
import torch.distributed as dist
from instructerc import train

# atexit runs last-registered first: this check runs after every handler that init_distributed adds
atexit.register(lambda: print("initialized" if dist.is_initialized() else "destroyed", flush=True))
train.init_distributed()
dist.barrier()
print("joined", flush=True)
if sys.argv[1] == "raise":
    raise RuntimeError("an unexpected error")
"""


@pytest.mark.parametrize("end", ["return", "raise"])
def test_the_process_group_is_destroyed_before_interpreter_exit(tmp_path, end):
    """gloo's threads, left to interpreter finalization, aborted a finished rank now and then (exit 6):
    the group is destroyed at exit, however the process ends, and only then (later runs in the same
    process still find it)."""
    done = launch([sys.executable, "-c", SHUTDOWN_PROBE, end], tmp_path)
    assert done.returncode == (0 if end == "return" else 1), done.stderr[-2000:]
    said = [line for line in done.stdout.splitlines() if line in ("joined", "initialized", "destroyed")]
    assert said == ["joined", "destroyed"], done.stdout[-2000:]


@pytest.mark.slow
def test_mpiexec_two_ranks_match_one_rank(tmp_path, data_dir, tiny_model_dir):
    """`mpiexec -n 2 instructerc train` (mpich from the `mpi` extra; DeepSpeed finds the ranks through
    mpi4py): both ranks agree and, with dropout off, equal the one-process adapter. A world size
    that does not divide the batch (packing none) is one line, exit 2, nothing written."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.is_file():
        pytest.skip("no mpiexec beside this Python: install the mpi extra (pip install -e .[mpi])")
    sets = QUICK + ["lora.dropout=0", "precision=fp32"]  # fp32: see test_two_ranks_match_one_rank
    one = run_stage(tmp_path, "one", data_dir, tiny_model_dir, extra=sets[len(QUICK):])
    base = [str(mpiexec), "-n", "2", str(Path(sys.executable).parent / "instructerc"), "train", "--stage", "speaker",
            "--data", str(data_dir), "--model", str(tiny_model_dir)]
    done = launch(base + ["--out", str(tmp_path / "two")] + [x for s in sets for x in ("--set", s)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    for noise in ("Setting accelerator to CPU", "is_gradient_checkpointing", "all_gather_into_tensor"):
        assert noise not in done.stderr + done.stdout  # nothing a user cannot act on
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and two["steps"] == one["steps"]
    a, b = adapter_tensors(tmp_path / "one" / "final"), adapter_tensors(tmp_path / "two" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    bad = ["packing=none", "micro_batch=3", "batch_size=9"]
    done = launch(base + ["--out", str(tmp_path / "bad")] + [x for s in bad for x in ("--set", s)], tmp_path)
    assert done.returncode == 2 and "not a multiple of micro_batch x world size" in done.stderr
    # the same one line from each rank (mpiexec may interleave the two ranks' writes on one stream)
    message = "instructerc train: error: batch_size 9 is not a multiple of micro_batch x world size = 6\n"
    assert done.stderr.count(message) == 2 or done.stderr.count(message.rstrip()) == 2, done.stderr[-2000:]
    assert done.stderr.count("error:") == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher, to", [("deepspeed", "group"), ("mpiexec", "launcher")])
def test_a_stop_under_a_launcher_checkpoints_every_rank(tmp_path, data_dir, tiny_model_dir, launcher, to):
    """SIGTERM as a scheduler or a terminal delivers it (to the whole process group: SLURM's scancel
    signals every process of the step, Ctrl-C the foreground group), or to mpiexec alone (which
    forwards it): both ranks checkpoint the same step and stop; the resumed 2-rank run ends with the
    uninterrupted 2-rank adapter. (DeepSpeed's launch.py, signalled alone, passes SIGTERM on too, but
    SIGKILLs the ranks 30 s later: a checkpoint slower than that is cut, and the previous one stays.)"""
    exe = Path(sys.executable).parent
    if launcher == "mpiexec" and not (exe / "mpiexec").is_file():
        pytest.skip("no mpiexec beside this Python: install the mpi extra (pip install -e .[mpi])")
    front = ([str(exe / "deepspeed"), "--master_port", str(free_port()), "--num_gpus", "2", "instructerc"]
             if launcher == "deepspeed" else [str(exe / "mpiexec"), "-n", "2", str(exe / "instructerc")])
    sets = ["batch_size=4", "epochs.speaker=8", "lora.dropout=0", "checkpoint_every=0", "log_every=1"]
    cmd = front + ["train", "--stage", "speaker", "--data", str(data_dir), "--model", str(tiny_model_dir)]
    cmd += [x for s in sets for x in ("--set", s)]
    assert launch(cmd + ["--out", str(tmp_path / "whole")], tmp_path).returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "cut")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM) if to == "group" else proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert (out + err).count("stopped by SIGTERM after step") >= 1 and "Traceback" not in out + err, err[-3000:]
    latest = json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())
    assert {"rng_rank0.json", "rng_rank1.json"} <= set(latest["files"])  # both ranks saved the same step
    assert not (tmp_path / "cut" / "final").exists()
    done = launch(cmd + ["--out", str(tmp_path / "cut"), "--resume"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    cut, whole = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("cut", "whole"))
    assert cut["steps"] == whole["steps"] and cut["adapter_sha256"] == whole["adapter_sha256"]


# --- bad input: one line, exit 2 -------------------------------------------------------------

def _cli(capsys, *argv):
    code = cli.main(["train", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_a_young_build_lock_is_named_and_an_old_one_removed(tmp_path, monkeypatch, capsys):
    import time

    from instructerc.train import STALE_BUILD_LOCK_S, clear_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    clear_stale_build_locks()
    assert capsys.readouterr().err == ""
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    # a build may be going on: the lock stays, and the user is told which file to delete if it hangs
    clear_stale_build_locks()
    err = capsys.readouterr().err
    assert lock.exists() and str(lock) in err and "delete that file" in err and err.count("\n") == 1
    # older than any build: no builder is behind it
    clear_stale_build_locks(now=time.time() + STALE_BUILD_LOCK_S + 60)
    err = capsys.readouterr().err
    assert not lock.exists() and f"removed {lock}" in err and err.count("\n") == 1


def test_each_python_environment_builds_the_comm_op_in_its_own_folder(tmp_path, monkeypatch):
    from instructerc.train import use_own_build_folder

    folders = []
    for prefix in (tmp_path / "venv_a", tmp_path / "venv_b", tmp_path / "venv_a"):
        monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
        monkeypatch.setattr(sys, "prefix", str(prefix))
        use_own_build_folder()
        folders.append(os.environ["TORCH_EXTENSIONS_DIR"])
    assert folders[0] != folders[1] and folders[0] == folders[2]
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    use_own_build_folder()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "mine")


def test_bad_input_is_one_line(tmp_path, capsys, data_dir, tiny_model_dir):
    erc_only = write_data(tmp_path / "erc_only", tasks=("erc",))
    old = write_data(tmp_path / "old")
    (old / "manifest.json").write_text('{"label_set": "meld", "labels": []}')  # before the prompt spec
    base = ["--model", tiny_model_dir, "--out", tmp_path / "run"]
    cases = [
        (["--stage", "plain", "--data", old, *base], "older instructerc"),
        (["--stage", "speaker", "--data", tmp_path / "nope", *base], "data folder not found"),
        (["--stage", "speaker", "--data", erc_only, *base], "no speaker records"),
        (["--stage", "stage3", "--data", data_dir, *base], "unknown stage"),
        (["--stage", "joint", "--data", data_dir, "--init-adapter", tmp_path / "missing", *base], "adapter not found"),
        (["--stage", "plain", "--data", data_dir, "--set", "lora.rank=4", *base], "unknown config key"),
        (["--stage", "plain", "--data", data_dir, "--config", tmp_path / "none.yaml", *base], "config file not found"),
        (["--stage", "plain", "--data", data_dir, "--model", tmp_path / "nomodel", "--out", tmp_path / "r"], "not found"),
    ]
    for argv, message in cases:
        code, err = _cli(capsys, *argv)
        assert code == 2 and len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "run").exists()
