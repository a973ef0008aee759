"""The embedded default models: tiny Llama-architecture LMs, pretrained by koraft itself.

They are saved as ordinary Hugging Face folders (config.json, model.safetensors, tokenizer.json
and tokenizer.model, a chat template) and loaded with `from_pretrained` exactly like a real preset,
so every code path the pipeline uses on EXAONE or Gemma runs here too, offline and on a CPU.
Each is pretrained on synthetic reading-comprehension text (koraft.models.pretrain), so LoRA and
QLoRA have a base model to adapt, as with a real preset.

All tiny presets share one tokenizer: a SentencePiece BPE with byte fallback, trained on the
pretraining corpus. Byte fallback keeps any string lossless (a syllable outside the vocabulary
becomes its UTF-8 bytes), SentencePiece is what llama.cpp's GGUF converter reads (tokenizer.model),
and sharing it lets a tiny-m teacher be distilled into a tiny-s student token for token. The RAFT
format's markers (<DOCUMENT>, ##begin_quote##, <ANSWER>: ...) are one token each.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.formats import ANSWER_MARKER, completion
from koraft.data.synth import synthetic_corpus
from koraft.models.pretrain import PretrainSpec, pretrain, reading_texts

TOKENIZER_DOCS = 800  # documents of the pretraining corpus the tokenizer is trained on
VOCAB_SIZE = 3000
PAD, BOS, END, UNK = "<|pad|>", "<|bos|>", "<|end|>", "<unk>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# The RAFT format's fixed markers, one token each. Learned from Korean text alone, the vocabulary spelt
# every ASCII letter of them as a byte: a chain-of-thought target took 70 to 86 tokens, more than the
# 64 new tokens evaluation allows, so no reasoning answer could ever be scored; the <DOCUMENT> tags of
# one prompt took 84 tokens. A real tokenizer spends a few tokens on each.
RAFT_MARKERS = ["<DOCUMENT>", "</DOCUMENT>", "##Reason:", "##begin_quote##", "##end_quote##", ANSWER_MARKER]
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
    seed: int  # weight initialisation
    pretraining: PretrainSpec = field(default_factory=PretrainSpec)
    max_position_embeddings: int = 4096


# Pretraining schedules sized so the base stage takes about four minutes on 2 Intel CPU cores under
# the pinned kernels (docs/training.md says what was tried): tiny-m sees about 1.4M tokens, tiny-s (a
# third of its cost per token) about 2.8M. Half of that (the schedule until 2026-12-02) reached fine-tuned
# F1 0.088 and distilled 0.085, this 0.123 and 0.166; at 1.0 / 2.0 epochs the fine-tuned tiny-m fell into
# repeating digits and scored no better than its base.
TINY_SPECS = {
    "tiny-s": TinySpec(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, seed=1,
                       pretraining=PretrainSpec(epochs=6.0)),
    "tiny-m": TinySpec(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, seed=2,
                       pretraining=PretrainSpec(epochs=3.0)),
}


def tokenizer_texts() -> list[str]:
    """What the tokenizer learns from: the first pretraining texts, and chain-of-thought targets over
    documents of the same name space, so a reasoning's own words (따라서, 문장이) are pieces too."""
    seed = PretrainSpec().seed
    reasoning = synthetic_corpus(TOKENIZER_DOCS, questions_per_doc=2, seed=seed + 1, cot_share=1.0, names="pretrain")
    return [*reading_texts(TOKENIZER_DOCS, seed),
            *(completion({"cot": qa.cot, "answer": qa.answer}) for _, qas in reasoning for qa in qas)]


def write_tokenizer(out_dir: str | Path) -> Any:
    """Train the shared tokenizer into out_dir (tokenizer.model and the HF files); deterministic."""
    import sentencepiece
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_texts()), model_writer=model,
        model_type="bpe", vocab_size=VOCAB_SIZE, byte_fallback=True, character_coverage=1.0, split_digits=True,
        # identity: text is already NFC (validate); no dummy prefix and kept whitespace make it lossless
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece=PAD, bos_piece=BOS, eos_piece=END, unk_piece=UNK,
        user_defined_symbols=ROLE_TOKENS + RAFT_MARKERS, num_threads=1, minloglevel=2,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(out_dir, bos_token=BOS, eos_token=END, pad_token=PAD,
                                               unk_token=UNK, add_bos_token=False, legacy=False,
                                               add_prefix_space=False)  # as trained: no dummy prefix
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_tokenizer() -> Any:
    """The shared tiny tokenizer, built in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        return write_tokenizer(folder)


def check_pretraining(base: dict[str, Any]) -> dict[str, PretrainSpec]:
    """params `base.pretraining`: per tiny preset, PretrainSpec keys over the preset's own schedule."""
    from dataclasses import fields, replace

    from koraft.core.config import check_number, reject_unknown_keys, section

    pretraining = section(base, "pretraining", "base.")
    reject_unknown_keys(pretraining, set(TINY_SPECS), "base.pretraining", f"tiny presets are {', '.join(TINY_SPECS)}")
    limits = {"documents": (1, 10**7, True), "seed": (0, 2**32 - 1, True), "block_size": (8, 65536, True),
              "batch_size": (1, 4096, True), "epochs": (0, 1000, False), "learning_rate": (1e-7, 1.0, False),
              "warmup_share": (0, 1, False), "weight_decay": (0, 1, False), "log_every": (1, 10**6, True)}
    specs = {}
    for name, spec in TINY_SPECS.items():
        key = f"base.pretraining.{name}"
        overrides = section(pretraining, name, "base.pretraining.") if name in pretraining else {}
        reject_unknown_keys(overrides, {f.name for f in fields(PretrainSpec)}, key)
        for field_name, (low, high, integer) in limits.items():
            if field_name in overrides:
                check_number(overrides, field_name, key, low, high, integer)
        specs[name] = replace(spec.pretraining, **overrides)
    return specs


def build_tiny_model(preset: str, out_dir: str | Path, pretraining: PretrainSpec | None = None) -> Path:
    """Write the tiny preset's HF model folder to out_dir, pretrained by `pretraining` (the preset's own
    spec unless given; `PretrainSpec(epochs=0)` leaves random weights). Same preset and spec, same bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = TINY_SPECS[preset]
    out_dir = Path(out_dir)
    tokenizer = write_tokenizer(out_dir)
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
    pretraining = spec.pretraining if pretraining is None else pretraining
    if pretraining.epochs > 0:
        pretrain(model, tokenizer, pretraining, label=f"base {preset}")
    model.save_pretrained(out_dir)
    return out_dir
