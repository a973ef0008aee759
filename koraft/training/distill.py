"""Logit distillation of the train stage's model (teacher) into a smaller student (docs/design.md §5).

Read top to bottom: check params; compare the two tokenizers before anything loads; render the
student's samples exactly as train renders them (same template, same truncation); get the
teacher either as a model (online: a forward pass per step) or as the top-k cache the teacher
stage wrote (offline: checked against these very samples); then train the student with the train
stage's machinery, where only the loss differs (KDTrainer.compute_loss), and measure how often
the student's top-1 token matches the teacher's on the validation split, before and after.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from koraft.core.errors import KoraftError
from koraft.core.hashing import folder_sha256
from koraft.core.jsonl import write_json
from koraft.core.processes import is_main_process
from koraft.models.loading import load_model, load_tokenizer, torch_dtype
from koraft.models.manifest import write_manifest
from koraft.models.presets import ResolvedModel, ensure_available, resolve_model
from koraft.models.samples import SampleSet, SampleTokenizer
from koraft.models.trained import load_trained, load_trained_tokenizer, trained_model_info
from koraft.training.config import DistillSettings
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
from koraft.training.train import FitOptions, TrainPaths, encode_splits, fit, peft_settings, summarise

CACHE_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DistillPaths:
    teacher: Path  # the train stage's adapter folder (its manifest names the base model)
    cache: Path  # the teacher stage's top-k cache
    student: TrainPaths  # student output, checkpoints, curves


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


def build_teacher_cache(train_rows: list[dict], val_rows: list[dict], settings: DistillSettings, adapter: Path,
                        cache: Path, train_path: str = "the train split") -> dict[str, Any]:
    """Offline mode: the teacher's top-k over the train and val completions, written once to `cache`."""
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    teacher, max_length = settings.teacher, settings.training.max_length
    if teacher.mode == "online":  # nothing to precompute; the distill stage runs the teacher itself
        write_json(cache / CACHE_MANIFEST, {"mode": "online"})
        return {"mode": "online"}
    manifest, resolved = trained_model_info(adapter)
    tokenizer = load_trained_tokenizer(adapter, resolved)
    train_set, val_set = encode_splits(tokenizer, resolved.family, manifest["system_prompt"],  # as the teacher saw
                                       max_length, train_rows, val_rows, train_path, key="distill")
    model = load_trained(adapter, teacher.quantization if teacher.quantize else None)
    vocabulary = len(tokenizer)
    summary: dict[str, Any] = {"mode": "offline", "teacher": str(adapter), "teacher_prompts_sha256":
                               manifest["prompts_sha256"], "top_k": min(teacher.top_k, vocabulary),
                               "covers_vocabulary": teacher.top_k >= vocabulary, "vocabulary": vocabulary,
                               "temperature": settings.loss.temperature, "max_length": max_length,
                               "splits": {}, "samples": {"train": train_set.manifest, "val": val_set.manifest}}
    for split, sample_set in (("train", train_set), ("val", val_set)):
        top = teacher_top_k(model, sample_set.samples, teacher.top_k, settings.loss.temperature, vocabulary,
                            teacher.batch_size)
        save_top_k(cache / f"{split}.safetensors", top)
        summary["splits"][split] = {"samples": len(sample_set.samples), "tokens": int(top.offsets[-1]),
                                    "bytes": (cache / f"{split}.safetensors").stat().st_size,
                                    "mass_in_top_k": mass_in_top_k(top) if top.log_probs.numel() else None}
    write_json(cache / CACHE_MANIFEST, summary)
    return summary


def read_cache(cache: Path, settings: DistillSettings, train_set: SampleSet, val_set: SampleSet, vocabulary: int
               ) -> tuple[dict[str, Any], TopK, TopK]:
    """The offline cache, refused unless it was computed for exactly these samples and settings."""
    path = cache / CACHE_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KoraftError(f"{path}: not found; run `dvc repro teacher` (distill.teacher.mode: offline)") from None
    expected = {"mode": "offline", "top_k": min(settings.teacher.top_k, vocabulary),
                "temperature": settings.loss.temperature, "max_length": settings.training.max_length,
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


@dataclass
class TeacherSide:
    """What the student trains against: its samples (with the teacher's cache rows, offline) and the trainer's
    teacher arguments, the teacher's top-1 on val for the agreement figure, and what identifies the teacher."""

    train_samples: list[dict[str, Any]]
    val_samples: list[dict[str, Any]]
    val_top: TopK
    trainer_kwargs: dict[str, Any]
    identity: str  # another teacher's checkpoints must not be resumed
    summary: dict[str, Any]
    same_batches: tuple = ()  # the online teacher runs on the student's batches


def offline_teacher(settings: DistillSettings, cache: Path, train_set: SampleSet, val_set: SampleSet,
                    vocabulary: int) -> TeacherSide:
    """The teacher stage's top-k cache, checked against these very samples."""
    manifest, train_top, val_top = read_cache(cache, settings, train_set, val_set, vocabulary)
    return TeacherSide(
        train_samples=with_cache_rows(train_set.samples, train_top, 0),
        val_samples=with_cache_rows(val_set.samples, val_top, int(train_top.offsets[-1])),
        val_top=val_top,
        trainer_kwargs={"top_k": concatenated(train_top, val_top), "covers_vocabulary": manifest["covers_vocabulary"]},
        identity=folder_sha256(cache),
        summary={"mode": "offline", "top_k": manifest["top_k"], "covers_vocabulary": manifest["covers_vocabulary"],
                 "mass_in_top_k": manifest["splits"]["train"]["mass_in_top_k"]})


def online_teacher(settings: DistillSettings, adapter: Path, train_set: SampleSet, val_set: SampleSet,
                   vocabulary: int) -> TeacherSide:
    """The train stage's model, loaded to run a forward pass on every student batch."""
    teacher = load_trained(adapter, settings.teacher.quantization if settings.teacher.quantize else None)
    val_top = teacher_top_k(teacher, val_set.samples, 1, settings.loss.temperature, vocabulary,
                            settings.teacher.batch_size)
    return TeacherSide(train_samples=train_set.samples, val_samples=val_set.samples, val_top=val_top,
                       trainer_kwargs={"teacher": teacher}, identity=folder_sha256(adapter),
                       summary={"mode": "online"}, same_batches=(teacher,))


def check_same_rendering(train_rows: list[dict], system_prompt: str, teacher: tuple, student: tuple) -> None:
    """The vocabulary and the rendering of one record compared before any weights load: (tokenizer, resolved
    model, name) of the teacher and of the student."""
    if not train_rows:
        return
    rendered = [SampleTokenizer(tokenizer, resolved.family, system_prompt).prompt(train_rows[0])[0]
                for tokenizer, resolved, _ in (teacher, student)]
    check_same_vocabulary(teacher[0], student[0], teacher[2], student[2], rendered[:1])
    if rendered[0] != rendered[1]:
        raise KoraftError(f"distill: the teacher ({teacher[2]}) and student ({student[2]}) chat templates "
                          f"render the same record differently; the teacher must see the prompts it was "
                          f"trained on")


def distill(train_rows: list[dict], val_rows: list[dict], settings: DistillSettings, paths: DistillPaths,
            train_path: str = "the train split", callbacks: list | None = None) -> dict[str, Any] | None:
    """Distill and save the student; returns the metrics for metrics/distill.json on rank 0, else None."""
    training = settings.training
    # 1. The two models, and their tokenizers compared before any weights load.
    teacher_manifest, teacher_resolved = trained_model_info(paths.teacher)
    student_resolved = resolve_model(training.model, paths.student.tiny_models, key="distill.student")
    ensure_available(student_resolved, key="distill.student")
    torch_dtype(student_resolved.dtype, "distill.student.dtype")
    peft = peft_settings(training, student_resolved)
    teacher_tokenizer = load_trained_tokenizer(paths.teacher, teacher_resolved)
    student_tokenizer = load_tokenizer(student_resolved)
    system_prompt = teacher_manifest["system_prompt"]
    teacher_name = teacher_resolved.preset or teacher_resolved.source
    student_name = student_resolved.preset or student_resolved.source
    check_same_rendering(train_rows, system_prompt, (teacher_tokenizer, teacher_resolved, teacher_name),
                         (student_tokenizer, student_resolved, student_name))

    # 2. The student's samples, rendered as the teacher's were; the teacher, offline or online.
    train_set, val_set = encode_splits(student_tokenizer, student_resolved.family, system_prompt,
                                       training.max_length, train_rows, val_rows, train_path, key="distill")
    vocabulary = len(student_tokenizer)
    if settings.teacher.mode == "offline":
        teacher = offline_teacher(settings, paths.cache, train_set, val_set, vocabulary)
    else:
        teacher = online_teacher(settings, paths.teacher, train_set, val_set, vocabulary)

    # 3. Train the student with the train stage's machinery and KDTrainer's loss; agreement before and after.
    from koraft.training.distill_trainer import KDTrainer

    batch_size = settings.teacher.batch_size
    student = load_model(student_resolved, training.quantization if training.method == "qlora" else None,
                         key="distill")
    before = agreement(student, val_set.samples, teacher.val_top, vocabulary, batch_size)
    options = FitOptions(training, paths.student,
                         [dataclasses.asdict(settings), teacher.identity, train_set.manifest, val_set.manifest],
                         callbacks=tuple(callbacks or ()), trainer_class=KDTrainer,
                         trainer_kwargs={"kd": settings.loss, "vocabulary": vocabulary, **teacher.trainer_kwargs},
                         same_batches=teacher.same_batches)
    fitted = fit(student, student_tokenizer, peft, teacher.train_samples, teacher.val_samples, options)
    after = agreement(fitted.trainer.model, val_set.samples, teacher.val_top, vocabulary, batch_size)  # every rank
    if not is_main_process():
        return None

    # 4. Save the manifest and summarise.
    softcap = logit_softcap(teacher_resolved)
    teacher_summary = {**teacher.summary, "model": teacher_name, "adapter": str(paths.teacher),
                       "method": teacher_manifest["method"], "final_logit_softcapping": softcap}
    if softcap:
        teacher_summary["note"] = (f"teacher logits are soft-capped at {softcap} (tanh) before the temperature, "
                                   f"so its distributions are flatter than uncapped logits would give")
    loss = settings.loss
    manifest = write_manifest(paths.student.adapter, student_resolved, system_prompt, training.method,
                              student_tokenizer, train_set, val_set, extra={"distilled_from": {
                                  "teacher": teacher_name, "adapter": str(paths.teacher),
                                  "teacher_prompts_sha256": teacher_manifest["prompts_sha256"],
                                  "loss": vars(loss), "mode": settings.teacher.mode}})
    metrics = summarise(fitted, student_resolved, training.method, train_set, val_set, manifest,
                        paths.student.adapter)
    for key in ("ce_loss", "kd_loss", "eval_ce_loss", "eval_kd_loss"):  # the two terms, last logged
        values = [entry[key] for entry in fitted.trainer.state.log_history if key in entry]
        metrics["loss"][key.replace("_loss", "_final")] = round(values[-1], 4) if values else None
    metrics["distillation"] = {"alpha": loss.alpha, "divergence": loss.divergence, "temperature": loss.temperature,
                               "beta": loss.beta if loss.divergence == "jsd" else None}
    metrics["teacher"] = teacher_summary
    metrics["agreement"] = {"before": before["top1_match"], "after": after["top1_match"], "tokens": after["tokens"]}
    metrics["student"] = metrics.pop("model")
    metrics["cost"]["student_bytes"] = metrics["cost"].pop("adapter_bytes")
    shutil.rmtree(paths.student.checkpoints)
    return metrics
