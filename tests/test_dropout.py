"""BitsDropout: the LoRA dropout the trainer uses on CPU is dropout (rate, scaling, gradient, seeding)."""

import torch
from peft import LoraConfig, get_peft_model

from instructerc.dropout import BitsDropout, use_bits_dropout
from instructerc.models import load_model


def test_drops_at_its_rate_and_scales_what_it_keeps():
    torch.manual_seed(0)
    drop = BitsDropout(0.05).train()
    x = torch.ones(1000, 1000, requires_grad=True)  # 1e6 elements: 3 sigma of the rate is 0.00065
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.05) < 0.001
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.95))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the gradient flows through the kept elements only
    assert abs(BitsDropout(0.3).train()(torch.ones(1000, 1000)).eq(0).float().mean().item() - 0.3) < 0.002


def test_four_lanes_of_a_draw_are_independent_of_each_other():
    """Each 64-bit draw feeds four neighbouring elements: every lane must drop at the rate, and a
    lane's choice must not predict its neighbour's."""
    torch.manual_seed(1)
    keep = BitsDropout(0.5).train()(torch.ones(400_000)).ne(0).view(-1, 4).float()
    assert ((keep.mean(0) - 0.5).abs() < 0.005).all()
    both = (keep[:, 0] * keep[:, 1]).mean().item()
    assert abs(both - 0.25) < 0.005


def test_identity_in_eval_mode_and_same_masks_for_the_same_seed():
    drop, x = BitsDropout(0.1), torch.randn(64, 32)
    assert drop.eval()(x) is x
    drop.train()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x))


def test_every_lora_dropout_of_a_cpu_model_is_replaced(tiny_model_dir):
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert use_bits_dropout(model) > 0
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    off = get_peft_model(load_model(tiny_model_dir), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert use_bits_dropout(off) == 0  # dropout 0 is PEFT's identity: nothing to replace
