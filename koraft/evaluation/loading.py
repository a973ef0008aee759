"""Load a model variant by name: what the evaluate and benchmark stages share (no evaluation settings needed)."""

from __future__ import annotations

from pathlib import Path

from koraft.core.errors import KoraftError


def load_named_variant(name: str, model: dict, student: dict | None, system_prompt: str, base_models: Path,
                       trained: dict[str, tuple[Path, str]], key: str, switch_off: str):
    """A model variant by name, as the evaluate and benchmark stages load it: base (`model:`) and student_base
    (`distill.student`) as they are, or a trained folder of `trained` (name -> (folder, the stage writing it)).
    `key` names the variant in errors, `switch_off` says how to do without it.
    Returns (model, tokenizer, resolved model, system prompt, folder with trained weights or None)."""
    from koraft.models.loading import load_model, load_tokenizer
    from koraft.models.manifest import MANIFEST
    from koraft.models.presets import ensure_available, resolve_model
    from koraft.models.trained import load_trained, load_trained_tokenizer, trained_model_info

    if name not in trained:
        section = "model" if name == "base" else "distill.student"
        resolved = resolve_model(model if name == "base" else student, base_models, key=section)
        ensure_available(resolved, key=section)
        return load_model(resolved, key=section).eval(), load_tokenizer(resolved), resolved, system_prompt, None
    folder, stage = trained[name]
    if not (folder / MANIFEST).exists():
        raise KoraftError(f"{key}: {folder} has no trained model; run `dvc repro {stage}` first, or {switch_off}")
    manifest, resolved = trained_model_info(folder)
    loaded = load_trained(folder, key=key)
    return loaded, load_trained_tokenizer(folder, resolved), resolved, manifest["system_prompt"], folder
