"""Does this CPU compute bf16 natively? What `precision: auto` sees, and bf16 against fp32 side by side.

    .venv/bin/python bench/bench_bf16.py --json bench/results/bench_bf16.json

Reports torch's view of the CPU (AMX tiles, AVX512-BF16), `models.fast_dtype()`, and the time of
the same work in fp32 and bf16: a (256 x 576) @ (576 x 1536) matmul (a SmolLM2 MLP projection),
and a forward of SmolLM2 on 64 tokens in fp32 against bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from instructerc import models  # noqa: E402


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = {"processor": platform.processor(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "amx_tile": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
              "fast_dtype": models.fast_dtype()}
    x, w = torch.randn(256, 576), torch.randn(1536, 576)
    xb, wb = x.bfloat16(), w.bfloat16()
    result["matmul_x20_fp32_s"] = best_of(lambda: [x @ w.T for _ in range(20)])
    result["matmul_x20_bf16_s"] = best_of(lambda: [xb @ wb.T for _ in range(20)])
    model = models.load_model(models.resolve_model(args.model)).eval()
    ids = torch.randint(0, 40_000, (1, 64))

    def forward(autocast: bool):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=ids)

    forward(False), forward(True)  # warm-up
    result["forward64_fp32_s"] = best_of(lambda: forward(False))
    result["forward64_bf16_autocast_s"] = best_of(lambda: forward(True))
    result["bf16_over_fp32_matmul"] = result["matmul_x20_bf16_s"] / result["matmul_x20_fp32_s"]
    result["bf16_over_fp32_forward"] = result["forward64_bf16_autocast_s"] / result["forward64_fp32_s"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
