"""Logit distillation of the train stage's model (teacher) into a smaller student (docs/design.md §5).

Read top to bottom: check params; compare the two tokenizers before anything loads; render the
student's samples exactly as train renders them (same template, same truncation); get the
teacher either as a model (online: a forward pass per step) or as the top-k cache the teacher
stage wrote (offline: checked against these very samples); then train the student with the train
stage's machinery, where only the loss differs (KDTrainer.compute_loss), and measure how often
the student's top-1 token matches the teacher's on the validation split, before and after.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from koraft.core.config import check_choice, check_number, reject_unknown_keys, section
from koraft.core.errors import KoraftError, ParamError
from koraft.core.hashing import folder_sha256
from koraft.core.jsonl import write_json
from koraft.core.processes import is_main_process
from koraft.models.loading import load_model, load_tokenizer, torch_dtype
from koraft.models.manifest import write_manifest
from koraft.models.presets import ResolvedModel, ensure_available, resolve_model
from koraft.models.samples import SampleSet, SampleTokenizer
from koraft.models.trained import load_trained, load_trained_tokenizer, trained_model_info
from koraft.training.distill_loss import DIVERGENCES, KDSettings
from koraft.training.teacher_cache import (
    TopK,
    check_same_vocabulary,
    completion_logits,
    completion_start,
    load_top_k,
    mass_in_top_k,
    save_top_k,
    teacher_top_k,
)
from koraft.training.train import (
    TrainPaths,
    check_library_settings,
    check_train,
    encode_splits,
    fit,
    peft_settings,
    summarise,
    train_settings,
)

MODES = ("offline", "online")
CACHE_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DistillPaths:
    teacher: Path  # the train stage's adapter folder (its manifest names the base model)
    cache: Path  # the teacher stage's top-k cache
    student: TrainPaths  # student output, checkpoints, curves


def distill_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The distill section merged onto train's: distill holds only what differs (student, teacher, loss, and
    any train key it overrides, sections merged key by key). The teacher keeps train's quantization."""
    train, distill = train_settings(params), section(params, "distill")
    if "max_length" in (distill.get("args") or {}):
        raise ParamError("distill.args.max_length", "the teacher and student see the samples the teacher was trained "
                                                    "on: set train.args.max_length only")
    merged = dict(train)
    for key, value in distill.items():
        inherited = train.get(key)
        merged[key] = {**inherited, **value} if isinstance(inherited, dict) and isinstance(value, dict) else value
    merged["teacher"] = {**section(distill, "teacher", "distill."), "quantization": train["quantization"]}
    return merged


def check_distill(distill: dict[str, Any]) -> KDSettings:
    """Structural checks of the distill section; returns the loss settings."""
    section(distill, "student", "distill.")  # checked in full by resolve_model, like model:
    teacher = section(distill, "teacher", "distill.")
    reject_unknown_keys(teacher, {"mode", "top_k", "batch_size", "quantize", "quantization"}, "distill.teacher")
    check_choice(teacher, "mode", "distill.teacher", MODES)
    check_number(teacher, "top_k", "distill.teacher", 1, 10**6, integer=True)
    check_number(teacher, "batch_size", "distill.teacher", 1, 4096, integer=True)
    if not isinstance(teacher.get("quantize", False), bool):
        raise ParamError("distill.teacher.quantize", "must be true or false")
    loss = section(distill, "loss", "distill.")
    reject_unknown_keys(loss, {"alpha", "divergence", "beta", "temperature"}, "distill.loss")
    alpha = check_number(loss, "alpha", "distill.loss", 0.0, 1.0)
    divergence = check_choice(loss, "divergence", "distill.loss", DIVERGENCES)
    temperature = check_number(loss, "temperature", "distill.loss", 0.01, 100.0)
    beta = check_number(loss, "beta", "distill.loss", 0.0, 1.0) if divergence == "jsd" else loss.get("beta", 0.5)
    if divergence == "jsd" and beta in (0, 1):
        raise ParamError("distill.loss.beta", "must be strictly between 0 and 1 for jsd (0 and 1 are forward_kl "
                                              "and reverse_kl)")
    check_train(distill, key="distill")
    check_library_settings(distill, key="distill")
    return KDSettings(alpha=float(alpha), divergence=divergence, temperature=float(temperature), beta=float(beta))


def agreement(model, samples: list[dict[str, Any]], teacher: TopK, vocabulary: int, batch_size: int
              ) -> dict[str, Any]:
    """Share of validation completion tokens where the student's most likely token is the teacher's."""
    was_training = model.training
    model.eval()
    matches = total = 0
    for index, logits in completion_logits(model, samples, batch_size):
        rows = slice(int(teacher.offsets[index]), int(teacher.offsets[index + 1]))
        student_top1 = logits[:, :vocabulary].argmax(-1).cpu()
        matches += int((student_top1 == teacher.token_ids[rows, 0].long()).sum())
        total += student_top1.numel()
    model.train(was_training)
    return {"top1_match": round(matches / total, 4) if total else None, "tokens": total}


def build_teacher_cache(train_rows: list[dict], val_rows: list[dict], distill: dict[str, Any], adapter: Path,
                        cache: Path, train_path: str = "the train split") -> dict[str, Any]:
    """Offline mode: the teacher's top-k over the train and val completions, written once to `cache`."""
    settings = check_distill(distill)
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    teacher = distill["teacher"]
    if teacher["mode"] == "online":  # nothing to precompute; the distill stage runs the teacher itself
        write_json(cache / CACHE_MANIFEST, {"mode": "online"})
        return {"mode": "online"}
    manifest, resolved = trained_model_info(adapter)
    tokenizer = load_trained_tokenizer(adapter, resolved)
    train_set, val_set = encode_splits(tokenizer, resolved.family, manifest["system_prompt"],  # as the teacher saw
                                       distill["args"]["max_length"], train_rows, val_rows, train_path, key="distill")
    model = load_trained(adapter, teacher["quantization"] if teacher["quantize"] else None)
    vocabulary = len(tokenizer)
    summary: dict[str, Any] = {"mode": "offline", "teacher": str(adapter), "teacher_prompts_sha256":
                               manifest["prompts_sha256"], "top_k": min(teacher["top_k"], vocabulary),
                               "covers_vocabulary": teacher["top_k"] >= vocabulary, "vocabulary": vocabulary,
                               "temperature": settings.temperature, "max_length": distill["args"]["max_length"],
                               "splits": {}, "samples": {"train": train_set.manifest, "val": val_set.manifest}}
    for split, sample_set in (("train", train_set), ("val", val_set)):
        top = teacher_top_k(model, sample_set.samples, teacher["top_k"], settings.temperature, vocabulary,
                            teacher["batch_size"])
        save_top_k(cache / f"{split}.safetensors", top)
        summary["splits"][split] = {"samples": len(sample_set.samples), "tokens": int(top.offsets[-1]),
                                    "bytes": (cache / f"{split}.safetensors").stat().st_size,
                                    "mass_in_top_k": mass_in_top_k(top) if top.log_probs.numel() else None}
    write_json(cache / CACHE_MANIFEST, summary)
    return summary


def read_cache(cache: Path, distill: dict[str, Any], settings: KDSettings, train_set: SampleSet,
               val_set: SampleSet, vocabulary: int) -> tuple[dict[str, Any], TopK, TopK]:
    """The offline cache, refused unless it was computed for exactly these samples and settings."""
    path = cache / CACHE_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KoraftError(f"{path}: not found; run `dvc repro teacher` (distill.teacher.mode: offline)") from None
    expected = {"mode": "offline", "top_k": min(distill["teacher"]["top_k"], vocabulary),
                "temperature": settings.temperature, "max_length": distill["args"]["max_length"],
                "vocabulary": vocabulary}
    stale = [f"{key} {manifest.get(key)!r} (params: {value!r})" for key, value in expected.items()
             if manifest.get(key) != value]
    if stale:
        raise KoraftError(f"{cache}: teacher cache was built with {', '.join(stale)}; run `dvc repro teacher`")
    for split, sample_set in (("train", train_set), ("val", val_set)):
        if manifest["samples"][split] != sample_set.manifest:
            raise KoraftError(f"{cache}: the cached {split} samples are not the student's (other data, template or "
                              f"truncation); run `dvc repro teacher`")
    return manifest, load_top_k(cache / "train.safetensors"), load_top_k(cache / "val.safetensors")


def with_cache_rows(samples: list[dict[str, Any]], top: TopK, shift: int) -> list[dict[str, Any]]:
    """Each sample with its tokens' rows in the teacher table: row r for a completion token, -1 for the prompt."""
    rows = []
    for index, sample in enumerate(samples):
        first = completion_start(sample)
        start, end = int(top.offsets[index]) + shift, int(top.offsets[index + 1]) + shift
        if end - start != len(sample["input_ids"]) - first:
            raise KoraftError(f"distill: sample {index} has {len(sample['input_ids']) - first} completion tokens, "
                              f"the teacher cache {end - start}; rerun `dvc repro teacher`")
        rows.append({**sample, "teacher_rows": [-1] * first + list(range(start, end))})
    return rows


def concatenated(train: TopK, val: TopK) -> TopK:
    """One table for both splits, so a batch needs only its rows' offsets, whichever split it comes from."""
    return TopK(token_ids=torch.cat([train.token_ids, val.token_ids]),
                log_probs=torch.cat([train.log_probs, val.log_probs]),
                tail=torch.cat([train.tail, val.tail]),
                offsets=torch.cat([train.offsets, val.offsets[1:] + train.offsets[-1]]))


def logit_softcap(resolved: ResolvedModel) -> float | None:
    """The model's final-logit soft-capping (Gemma-2: 30), from its config; its logits never exceed it."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolved.source, revision=resolved.revision,
                                        trust_remote_code=resolved.trust_remote_code)
    return getattr(config.get_text_config(), "final_logit_softcapping", None)


def distill(train_rows: list[dict], val_rows: list[dict], distill_params: dict[str, Any], paths: DistillPaths,
            train_path: str = "the train split", callbacks: list | None = None) -> dict[str, Any] | None:
    """Distill and save the student; returns the metrics for metrics/distill.json on rank 0, else None."""
    settings = check_distill(distill_params)
    teacher_manifest, teacher_resolved = trained_model_info(paths.teacher)
    student_resolved = resolve_model(distill_params["student"], paths.student.tiny_models, key="distill.student")
    ensure_available(student_resolved, key="distill.student")
    torch_dtype(student_resolved.dtype, "distill.student.dtype")
    peft = peft_settings(distill_params, student_resolved, key="distill")

    # The vocabulary and the rendering are compared before any weights load.
    teacher_tokenizer = load_trained_tokenizer(paths.teacher, teacher_resolved)
    student_tokenizer = load_tokenizer(student_resolved)
    system_prompt = teacher_manifest["system_prompt"]
    teacher_name, student_name = teacher_resolved.preset or teacher_resolved.source, \
        student_resolved.preset or student_resolved.source
    if train_rows:
        rendered = [SampleTokenizer(tokenizer, resolved.family, system_prompt).prompt(train_rows[0])[0]
                    for tokenizer, resolved in ((teacher_tokenizer, teacher_resolved),
                                                (student_tokenizer, student_resolved))]
        check_same_vocabulary(teacher_tokenizer, student_tokenizer, teacher_name, student_name, rendered[:1])
        if rendered[0] != rendered[1]:
            raise KoraftError(f"distill: the teacher ({teacher_name}) and student ({student_name}) chat templates "
                              f"render the same record differently; the teacher must see the prompts it was "
                              f"trained on")
    train_set, val_set = encode_splits(student_tokenizer, student_resolved.family, system_prompt,
                                       distill_params["args"]["max_length"], train_rows, val_rows, train_path,
                                       key="distill")
    vocabulary = len(student_tokenizer)
    batch_size = distill_params["teacher"]["batch_size"]
    mode = distill_params["teacher"]["mode"]
    train_samples, val_samples = train_set.samples, val_set.samples
    trainer_kwargs: dict[str, Any] = {"kd": settings, "vocabulary": vocabulary}
    teacher_summary: dict[str, Any] = {"mode": mode}
    if mode == "offline":
        cache_manifest, train_top, val_top = read_cache(paths.cache, distill_params, settings, train_set, val_set,
                                                        vocabulary)
        train_samples = with_cache_rows(train_samples, train_top, 0)
        val_samples = with_cache_rows(val_samples, val_top, int(train_top.offsets[-1]))
        trainer_kwargs.update(top_k=concatenated(train_top, val_top),
                              covers_vocabulary=cache_manifest["covers_vocabulary"])
        teacher_summary.update(top_k=cache_manifest["top_k"], covers_vocabulary=cache_manifest["covers_vocabulary"],
                               mass_in_top_k=cache_manifest["splits"]["train"]["mass_in_top_k"])
        teacher_identity = folder_sha256(paths.cache)  # another teacher's checkpoints must not be resumed
    else:
        teacher = load_trained(paths.teacher, distill_params["teacher"]["quantization"]
                               if distill_params["teacher"]["quantize"] else None)
        val_top = teacher_top_k(teacher, val_samples, 1, settings.temperature, vocabulary, batch_size)
        trainer_kwargs["teacher"] = teacher
        teacher_identity = folder_sha256(paths.teacher)

    from koraft.training.distill_trainer import KDTrainer

    method = distill_params["method"]
    student = load_model(student_resolved, distill_params["quantization"] if method == "qlora" else None,
                         key="distill")
    before = agreement(student, val_set.samples, val_top, vocabulary, batch_size)
    fitted = fit(student, student_tokenizer, peft, train_samples, val_samples, distill_params, paths.student,
                 [distill_params, teacher_identity, train_set.manifest, val_set.manifest], key="distill",
                 callbacks=callbacks, trainer_class=KDTrainer, trainer_kwargs=trainer_kwargs,
                 same_batches=(trainer_kwargs["teacher"],) if mode == "online" else ())
    after = agreement(fitted.trainer.model, val_set.samples, val_top, vocabulary, batch_size)  # every rank: FSDP
    if not is_main_process():
        return None

    softcap = logit_softcap(teacher_resolved)
    teacher_summary.update(model=teacher_name, adapter=str(paths.teacher), method=teacher_manifest["method"],
                           final_logit_softcapping=softcap)
    if softcap:
        teacher_summary["note"] = (f"teacher logits are soft-capped at {softcap} (tanh) before the temperature, "
                                   f"so its distributions are flatter than uncapped logits would give")
    manifest = write_manifest(paths.student.adapter, student_resolved, system_prompt, method, student_tokenizer,
                              train_set, val_set, extra={"distilled_from": {
                                  "teacher": teacher_name, "adapter": str(paths.teacher),
                                  "teacher_prompts_sha256": teacher_manifest["prompts_sha256"],
                                  "loss": vars(settings), "mode": mode}})
    metrics = summarise(fitted, student_resolved, method, train_set, val_set, manifest, paths.student.adapter)
    for key in ("ce_loss", "kd_loss", "eval_ce_loss", "eval_kd_loss"):  # the two terms, last logged
        values = [entry[key] for entry in fitted.trainer.state.log_history if key in entry]
        metrics["loss"][key.replace("_loss", "_final")] = round(values[-1], 4) if values else None
    metrics["distillation"] = {"alpha": settings.alpha, "divergence": settings.divergence,
                               "temperature": settings.temperature,
                               "beta": settings.beta if settings.divergence == "jsd" else None}
    metrics["teacher"] = teacher_summary
    metrics["agreement"] = {"before": before["top1_match"], "after": after["top1_match"], "tokens": after["tokens"]}
    metrics["student"] = metrics.pop("model")
    metrics["cost"]["student_bytes"] = metrics["cost"].pop("adapter_bytes")
    shutil.rmtree(paths.student.checkpoints)
    return metrics
