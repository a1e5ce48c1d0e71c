"""Base models: loading, and turning a prompt/answer pair into token ids.

Training and decoding both encode through `prompt_ids` / `answer_ids`, so the model is scored
on exactly the token sequence it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from instructerc.errors import UserError


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    if not Path(path).exists():
        raise UserError("model folder not found", path=path)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The model's input for a prompt: its chat template when it has one, else the plain text."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer releases
            ids = ids["input_ids"]
        return list(ids)
    ids = tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"]
    return list(ids)


def answer_ids(tokenizer, answer: str) -> list[int]:
    """The answer's tokens as the model must produce them, closed by end-of-sequence."""
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
