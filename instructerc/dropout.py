"""LoRA dropout that is cheap on a CPU.

torch's CPU dropout draws one Bernoulli sample per element from a serial Mersenne Twister: on a
(1024 x 576) LoRA input it took 5.2 ms here, more than the bf16 q_proj matmul beside it (1.8 ms),
and a LoRA model runs one per adapted projection (4 per layer). `BitsDropout` draws 64 random bits
per call of the generator and cuts them into four 16-bit uniforms: the same dropout (each element
kept with probability 1 - p, independently, scaled by 1 / (1 - p)) with p rounded to 1/65536, in
1.5 ms (BENCHMARKS.md). It uses torch's default generator, so seeding and resumed runs behave as
before. GPUs keep torch's own dropout, which is fast there.
"""

from __future__ import annotations

import torch

_LEVELS = 1 << 16


class BitsDropout(torch.nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p
        # a 16-bit uniform in [-32768, 32767] drops its element below this
        self.threshold = -(_LEVELS // 2) + round(p * _LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
        keep = words.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return torch.where(keep, x * (1 / (1 - self.p)), 0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_bits_dropout(model) -> int:
    """Replace the dropout of every LoRA layer of `model` by BitsDropout where training runs on the
    CPU; returns how many. (The model is still on the CPU when this runs: where a GPU exists, the
    trainer moves it there, and torch's dropout stays.)"""
    from peft.tuners.lora import LoraLayer

    if torch.cuda.is_available():
        return 0
    replaced = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, drop in module.lora_dropout.items():
                if isinstance(drop, torch.nn.Dropout) and drop.p > 0:
                    module.lora_dropout[name] = BitsDropout(drop.p)
                    replaced += 1
    return replaced
