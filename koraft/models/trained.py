"""Load what the train and distill stages saved: base + adapter (or full weights) and its tokenizer.

The folder's koraft_manifest.json names the base model and the method, so the teacher of
distillation and every evaluated variant load a trained model the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from koraft.models.loading import load_model, readable
from koraft.models.manifest import manifest_model, read_manifest
from koraft.models.presets import ResolvedModel, ensure_available


def trained_model_info(folder: Path) -> tuple[dict[str, Any], ResolvedModel]:
    """The folder's manifest and the base model it was trained on."""
    manifest = read_manifest(folder)
    return manifest, manifest_model(manifest)


def load_trained_tokenizer(folder: Path, resolved: ResolvedModel):
    """The tokenizer saved with the adapter: the one (and the pad token) the model was trained with."""
    from transformers import AutoTokenizer

    with readable(folder):
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=resolved.trust_remote_code)


def load_trained(folder: Path, quantization: dict[str, Any] | None = None, key: str = "distill.teacher"):
    """Base + adapter (merged unless 4-bit, for a faster forward), in eval mode without gradients."""
    from peft import PeftModel

    manifest, resolved = trained_model_info(folder)
    if manifest["method"] == "full":  # the stage saved the whole model in the folder
        model = load_model(dataclasses.replace(resolved, source=str(folder), revision=None), quantization, key=key)
    else:
        ensure_available(resolved)
        base = load_model(resolved, quantization, key=key)
        with readable(folder):
            model = PeftModel.from_pretrained(base, str(folder))
        if quantization is None:
            model = model.merge_and_unload()
    model.eval().requires_grad_(False)
    return model
