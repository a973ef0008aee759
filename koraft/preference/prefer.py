"""Preference tuning with trl's own trainers, continuing the train stage's LoRA adapter.

Read top to bottom: load the base as train loaded it (4-bit for QLoRA) with the SFT adapter trainable;
render each pair's prompt exactly as SFT rendered the record (same template, system prompt and document
fitting); train with the method's trainer; save the adapter, with the SFT folder's manifest and tokenizer,
so that evaluate and export load it like the fine-tuned one.

The reference model of DPO and KTO is the SFT model itself, without a second copy: handed a PeftModel and no
peft_config, trl copies the adapter into a frozen "ref" adapter on the same base weights (trl 1.16,
DPOTrainer and KTOTrainer). ORPO and SimPO need no reference.

DPO and KTO score the sides through trl's fused LM head, which on a device without Triton projects every
position, prompt included, through the 262k-token vocabulary; `completion_positions_only` makes it project
the completion positions alone, as trl does on CUDA (measured below).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.jsonl import write_json
from koraft.core.measure import directory_bytes, peak_memory_mib
from koraft.models.chat import end_of_turn
from koraft.models.manifest import MANIFEST, read_manifest
from koraft.models.samples import SampleTokenizer, fit_documents
from koraft.preference.config import PAIRED, PreferSettings, method_classes, trainer_config
from koraft.training.train import sort_target_modules

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class PreferPaths:
    sft_adapter: Path  # the train stage's folder, continued
    adapter: Path  # where the preferred adapter goes
    scratch: Path  # the trainer's output_dir, removed afterwards


def bos_free(prompt: str, tokenizer) -> str:
    """The rendered prompt without the template's leading bos when the tokenizer adds one itself: trl tokenizes
    prompts with the tokenizer's special tokens (DPO, KTO) or adds a missing bos (ORPO, CPO)."""
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
    if adds_bos and tokenizer.bos_token and prompt.startswith(tokenizer.bos_token):
        return prompt[len(tokenizer.bos_token):]
    return prompt


def training_rows(pairs: list[dict[str, Any]], records: dict[str, dict[str, Any]], encoder: SampleTokenizer,
                  max_length: int, method: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The trainer's rows: prompt/chosen/rejected (DPO, ORPO, SimPO) or prompt/completion/label (KTO: each
    record's chosen side once, as a good example, and every rejected side as a bad one).

    A prompt is fitted as SFT fitted it (distractors dropped, then the golden document trimmed around the
    answer), to max_length minus the longer of its two sides."""
    tokenizer, eos = encoder.tokenizer, end_of_turn(encoder.tokenizer, encoder.family)
    rows, counts, good_seen = [], {"pairs": len(pairs), "unfit": 0}, set()
    for pair in pairs:
        record = records.get(pair["id"])
        if record is None:
            raise KoraftError(f"pair {pair['id']!r} names no record of the train split: rebuild the pairs "
                              f"(dvc repro pairs)")
        chosen, rejected = pair["chosen"] + eos, pair["rejected"] + eos
        longest = max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in (chosen, rejected))
        fitted = fit_documents(record, encoder, max_length - longest, around_evidence=True)
        if isinstance(fitted, str):
            counts["unfit"] += 1
            continue
        prompt = bos_free(fitted[0][0], tokenizer)
        if method in PAIRED:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            continue
        if pair["id"] not in good_seen:
            good_seen.add(pair["id"])
            rows.append({"prompt": prompt, "completion": chosen, "label": True})
        rows.append({"prompt": prompt, "completion": rejected, "label": False})
    counts["rows"] = len(rows)
    return rows, counts


def load_policy(settings: PreferSettings, sft_adapter: Path):
    """(the base with the SFT adapter trainable, the SFT manifest, the resolved base model)."""
    from peft import PeftModel, prepare_model_for_kbit_training

    from koraft.models.loading import load_model, readable
    from koraft.models.presets import ensure_available
    from koraft.models.trained import trained_model_info

    manifest, resolved = trained_model_info(sft_adapter)
    if manifest["method"] not in ("lora", "qlora"):
        raise KoraftError(f"prefer: {sft_adapter} holds a {manifest['method']} model; prefer continues a LoRA "
                          f"adapter (train.method lora or qlora)")
    ensure_available(resolved)
    quantized = manifest["method"] == "qlora"
    base = load_model(resolved, settings.train.quantization if quantized else None, key="train")
    if quantized:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    with readable(sft_adapter):
        model = PeftModel.from_pretrained(base, str(sft_adapter), is_trainable=True)
    return model, manifest, resolved


def prefer(pairs: list[dict[str, Any]], records: dict[str, dict[str, Any]], settings: PreferSettings,
           paths: PreferPaths) -> dict[str, Any]:
    """Train the method on the pairs and save the preferred adapter; returns metrics/prefer.json's training part."""
    from datasets import Dataset

    from koraft.models.trained import load_trained_tokenizer

    if not pairs:
        raise KoraftError("prefer: no preference pairs (see metrics/prefer.json's sources for why each source "
                          "built none); switch sources on in prefer.sources")
    model, manifest, resolved = load_policy(settings, paths.sft_adapter)
    tokenizer = load_trained_tokenizer(paths.sft_adapter, resolved)
    encoder = SampleTokenizer(tokenizer, resolved.family, manifest["system_prompt"])
    rows, counts = training_rows(pairs, records, encoder, settings.train.max_length, settings.method)
    if not rows:
        raise KoraftError(f"prefer: none of the {len(pairs)} pairs fits train.args.max_length "
                          f"({settings.train.max_length} tokens)")
    # trl ends each side with the tokenizer's eos unless it is there: the sides already end with the family's
    # end of turn, which is where an answer stops, so the trainer's copy of the tokenizer names it as eos.
    trainer_tokenizer = copy.deepcopy(tokenizer)
    trainer_tokenizer.eos_token = end_of_turn(tokenizer, resolved.family)
    defaults = {}
    if settings.method == "kto":  # KTO's advice: weigh the good and bad examples to balance their counts
        good = sum(row["label"] for row in rows)
        defaults = {"desirable_weight": round((len(rows) - good) / good, 4), "undesirable_weight": 1.0}
    config = trainer_config(settings, paths.scratch, defaults)
    trainer_class = method_classes(settings.method)[1]
    trainer = trainer_class(model=model, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=trainer_tokenizer)
    before = adapter_weights(model)
    started = time.perf_counter()
    with completion_positions_only():
        trainer.train()
    runtime = time.perf_counter() - started
    changed = weights_changed(before, adapter_weights(model))
    save_adapter(model, paths, {"method": settings.method, "pairs": counts["pairs"], "rows": counts["rows"]})
    shutil.rmtree(paths.scratch, ignore_errors=True)
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    logged = {key: value for entry in history for key, value in entry.items()
              if key.startswith(("rewards/", "logps/", "logits/", "kl")) and isinstance(value, float)}
    return {
        "method": settings.method,
        "rows": counts,
        "steps": trainer.state.global_step,
        "loss": {"first": round(losses[0], 4) if losses else None, "final": round(losses[-1], 4) if losses else None},
        "last_logged": {key: round(value, 4) for key, value in sorted(logged.items())},
        "adapter_change": changed,
        "cost": {"train_runtime_s": round(runtime, 2), "peak_memory_mib": peak_memory_mib(),
                 "adapter_bytes": directory_bytes(paths.adapter)},
    }


@contextlib.contextmanager
def completion_positions_only() -> Iterator[None]:
    """trl 1.16's fused LM head (DPO, KTO) scores only the labelled positions where `_use_triton` says the device
    has Triton, and every position elsewhere, because a changing number of positions recompiles XLA graphs
    (Neuron). Eager CPU compiles nothing, so the compact path is the one to take there too: the same per-token
    log-probabilities (equal to 4 decimals on the default, tests/test_prefer.py checks the tiny model's), without
    the prompt's ~500 positions x 262k vocabulary in each forward and backward. Measured on the default (AMD EPYC,
    2 cores, DPO, 2 pairs a step): 51.7 s -> 16.2 s a step, peak memory 4.7 -> 3.2 GiB. The kernel itself still
    picks Triton by its own check, so on CPU it runs trl's torch fallback either way."""
    from trl.trainer import utils as trl_utils

    triton_check = getattr(trl_utils, "_use_triton", None)
    if triton_check is None:  # a trl without this check: leave its head as it is
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = triton_check


def adapter_weights(model) -> dict[str, Any]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()
            if ".default." in name and "lora_" in name}


def weights_changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """How far training moved the adapter: tensors that changed, and the largest absolute change."""
    deltas = [float((after[name] - before[name]).abs().max()) for name in before]
    return {"tensors": len(deltas), "changed": sum(delta > 0 for delta in deltas),
            "max_abs": max(deltas, default=0.0)}


def save_adapter(model, paths: PreferPaths, preference: dict[str, Any]) -> None:
    """The SFT folder (manifest, tokenizer, card) with the preferred adapter's weights in place of its own; the
    manifest gains a `preference` entry, and keeps the SFT prompts, which the preferred model is prompted with."""
    if paths.adapter.exists():
        shutil.rmtree(paths.adapter)
    shutil.copytree(paths.sft_adapter, paths.adapter)
    for name in ADAPTER_FILES:
        (paths.adapter / name).unlink(missing_ok=True)
    model.save_pretrained(str(paths.adapter), selected_adapters=["default"])  # not trl's frozen "ref" copy
    sort_target_modules(paths.adapter / "adapter_config.json")
    write_json(paths.adapter / MANIFEST, {**read_manifest(paths.adapter), "preference": preference})
