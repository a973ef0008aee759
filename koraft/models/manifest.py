"""The manifest a trained folder carries: the base model, the method and every rendered prompt's hash.

The teacher, the evaluation and the export read it to load the folder exactly as it was trained.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError, ParamError
from koraft.core.jsonl import write_json
from koraft.models.chat import text_sha256
from koraft.models.presets import FAMILIES, ResolvedModel
from koraft.models.samples import SampleSet

MANIFEST = "koraft_manifest.json"


def check_system_prompt(system_prompt: Any, key: str = "model.system_prompt") -> str:
    if not isinstance(system_prompt, str):
        raise ParamError(key, f"must be a string (may be empty), got {system_prompt!r}")
    return system_prompt


def write_manifest(adapter: Path, resolved: ResolvedModel, system_prompt: str, method: str, tokenizer,
                   train_set: SampleSet, val_set: SampleSet, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the adapter was trained from: model, template inputs and every rendered prompt's hash."""
    manifest = {
        "model": {**dataclasses.asdict(resolved), "family": resolved.family.name},
        "method": method,
        "chat_template_sha256": text_sha256(tokenizer.chat_template),
        "template_kwargs": resolved.family.template_kwargs,
        "system_prompt": system_prompt,
        "pad_token": tokenizer.pad_token,
        "samples": {"train": train_set.manifest, "val": val_set.manifest},
        **(extra or {}),
    }
    manifest["prompts_sha256"] = text_sha256(json.dumps(manifest["samples"], sort_keys=True))
    write_json(adapter / MANIFEST, manifest)
    return manifest


def read_manifest(adapter: Path) -> dict[str, Any]:
    path = Path(adapter) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KoraftError(f"{path}: not found; is {adapter} an output of the train stage?") from None


def manifest_model(manifest: dict[str, Any]) -> ResolvedModel:
    """The base model an adapter was trained on, as its manifest recorded it."""
    info = manifest["model"]
    return ResolvedModel(**{**info, "family": FAMILIES[info["family"]]})
