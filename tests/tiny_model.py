"""A tiny randomly initialised Llama and a tokenizer trained on the spot: no download."""

from __future__ import annotations

from pathlib import Path

from instructerc.labels import LABEL_SETS

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    words = [w for ls in LABEL_SETS.values() for w in ls.labels]
    base = (
        "Now you are an expert in sentiment and emotional analysis. The following conversation "
        "noted between ### involves several speakers. Please select the emotional label of from "
        "Identify who speaks the following utterance Based on the above historical utterances the "
        "next utterance is spoken by predict the emotional state Here are similar utterances from "
        "other conversations with their labels Speaker_0 Speaker_1 Speaker_2 Monica Chandler Joey "
        "Ross Rachel Phoebe I you we it is was what how why yes no oh okay hey great really"
    )
    return [base, " ".join(words)] * 20


def make_tiny_model(out: str | Path, *, chat_template: bool = True, seed: int = 0) -> Path:
    """Write a ~100k-parameter Llama + byte-level BPE tokenizer to `out` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out
