"""The embedded default models: tiny Llama-architecture LMs built from a config and a seed.

They are saved as ordinary Hugging Face folders (config.json, model.safetensors, tokenizer.json
with a chat template) and loaded with `from_pretrained` exactly like a real preset, so every
code path the pipeline uses on EXAONE or Gemma runs here too, offline and on a CPU.

All tiny presets share one tokenizer, a byte-level BPE trained on synthetic Korean text: byte
level means any string round-trips losslessly, and sharing it lets a tiny-m teacher be
distilled into a tiny-s student token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOKENIZER_SEED = 20261121
TOKENIZER_DOCS = 400
VOCAB_SIZE = 3000
PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, END, "<|system|>", "<|user|>", "<|assistant|>"]
# ChatML-like: every turn is <|role|>text<|end|>; generation starts after <|assistant|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    seed: int
    max_position_embeddings: int = 4096


TINY_SPECS = {
    "tiny-s": TinySpec(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, seed=1),
    "tiny-m": TinySpec(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, seed=2),
}


def build_tokenizer():
    """The shared tiny tokenizer; deterministic in TOKENIZER_SEED."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from koraft.data.synth import synthetic_corpus

    texts = []
    for document, qas in synthetic_corpus(TOKENIZER_DOCS, seed=TOKENIZER_SEED):
        texts.append(document.text)
        texts.extend(f"{qa.question} {qa.answer} {qa.cot or ''}" for qa in qas)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=END, pad_token=PAD)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(preset: str, out_dir: str | Path) -> Path:
    """Write the tiny preset's HF model folder to out_dir; same preset, same bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = TINY_SPECS[preset]
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)  # building a model must not reseed the caller
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
