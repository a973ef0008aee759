"""Small local model folders for each family: the real architecture class with tiny dimensions and
random weights, and a tokenizer with the family's special tokens and chat template.

They stand in for hub downloads: loading, templating, padding and LoRA targeting go through
exactly the code a real EXAONE, Gemma, Llama or Qwen checkpoint would.
"""

from __future__ import annotations

from pathlib import Path

import torch

from koraft.models.packaged import chat_template
from koraft.models.tiny import build_tokenizer

TEMPLATES = Path(__file__).parent / "chat_templates"
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024}

# family -> (config class name, special tokens {role: token}, extra specials)
TOKENS = {
    "gemma2": ("Gemma2Config", {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"},
               ["<start_of_turn>", "<end_of_turn>"]),
    "gemma3": ("Gemma3TextConfig", {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"},
               ["<start_of_turn>", "<end_of_turn>"]),
    "gemma3_pt": ("Gemma3TextConfig", {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"},
                  ["<start_of_turn>", "<end_of_turn>"]),
    "llama3": ("LlamaConfig", {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"},
               ["<|start_header_id|>", "<|end_header_id|>", "<|finetune_right_pad_id|>"]),
    "qwen2": ("Qwen2Config", {"eos": "<|im_end|>", "pad": "<|endoftext|>"}, ["<|im_start|>"]),
    "exaone4": ("Exaone4Config", {"bos": "[BOS]", "eos": "[|endofturn|]", "pad": "[PAD]"},
                ["[|system|]", "[|user|]", "[|assistant|]", "<think>", "</think>"]),
}


def family_tokenizer(family: str):
    _, roles, extra = TOKENS[family]
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({f"{role}_token": token for role, token in roles.items()})
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    if "pad" not in roles:
        tokenizer.pad_token = None  # like Llama-3: no pad token of its own
    # Gemma 3's is koraft's own: the base stage writes it into the packaged model's folder.
    tokenizer.chat_template = chat_template() if family.startswith("gemma3") else \
        (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
    return tokenizer


def build_family_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    import transformers

    config_name, _, _ = TOKENS[family]
    tokenizer = family_tokenizer(family)
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **SMALL,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
