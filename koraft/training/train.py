"""Fine-tune with trl's SFTTrainer: LoRA, QLoRA (NF4) or full, on prompt/completion samples.

Read top to bottom: resolve and check everything that can be wrong (params, model, target
modules, samples), then build the trainer, resume from the last complete checkpoint of the
same configuration if there is one, train, save the adapter with its prompt manifest, and
summarise. Checkpoints live outside DVC's outputs so an interrupted `dvc repro` can resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError, ParamError
from koraft.core.measure import directory_bytes, peak_memory_mib
from koraft.core.processes import engine, is_main_process, start_process_group, wait_for_everyone
from koraft.models.loading import check_target_modules, load_model, load_tokenizer
from koraft.models.manifest import write_manifest
from koraft.models.presets import Family, ResolvedModel, ensure_available, resolve_model
from koraft.models.samples import SampleSet, SampleTokenizer, build_samples
from koraft.training.config import TrainSettings, lora_config, sft_config
from koraft.training.packing import (
    bin_report,
    joint_plan,
    pack,
    packing_plan,
    padding_free_collator,
    restore_attention,
    use_packed_attention,
)


@dataclass(frozen=True)
class TrainPaths:
    adapter: Path  # the PEFT adapter (or the full model for method: full)
    checkpoints: Path  # scratch space kept between interrupted runs, removed after success
    plots: Path | None  # DVCLive loss curves; None writes none (the benchmarks, which need no DVC)
    tiny_models: Path  # where the base stage builds the embedded tiny models


def lora_settings(lora: dict[str, Any], family: Family) -> dict[str, Any]:
    """train.lora with the family's target modules (all-linear, or EXAONE-3's own names) as the default."""
    default = family.target_modules if isinstance(family.target_modules, str) else list(family.target_modules)
    return {"target_modules": default, **lora}


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint written to the end: the trainer writes trainer_state.json last, after the
    optimizer and every process's RNG state (rng_state.pth, or rng_state_<rank>.pth across processes)."""
    complete = [path for path in checkpoints.glob("checkpoint-*")
                if (path / "trainer_state.json").exists() and any(path.glob("rng_state*.pth"))]
    return max(complete, key=checkpoint_step, default=None)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def prepare_checkpoints(checkpoints: Path, fingerprint: str) -> Path | None:
    """Keep checkpoints only if they come from the same configuration and data; return the one to resume.

    Rank 0 clears and marks the folder; every process then resumes from the same checkpoint.
    """
    if is_main_process():
        marker = checkpoints / "fingerprint"
        if checkpoints.exists() and (not marker.exists() or marker.read_text() != fingerprint):
            shutil.rmtree(checkpoints)
        checkpoints.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint)
    wait_for_everyone()
    return last_checkpoint(checkpoints)


def encode_splits(tokenizer, family: Family, system_prompt: str, max_length: int, train_rows: list[dict],
                  val_rows: list[dict], train_path: str, key: str = "train") -> tuple[SampleSet, SampleSet]:
    if not train_rows:
        raise KoraftError(f"{train_path}: training split is empty; check split.ratios and the raw inputs")
    encoder = SampleTokenizer(tokenizer, family, system_prompt)
    train_set = build_samples(train_rows, encoder, max_length)
    if not train_set.samples:
        raise ParamError(f"{key}.args.max_length", f"{max_length} tokens hold no sample of {train_path}: "
                                                   f"{train_set.skipped[0]['reason']}")
    return train_set, build_samples(val_rows, encoder, max_length)


def peft_settings(settings: TrainSettings, resolved: ResolvedModel):
    """The LoraConfig for method lora/qlora (target modules checked against the model), None for full."""
    if settings.method == "full":
        return None
    lora = lora_settings(settings.lora, resolved.family)
    config = lora_config(lora, settings.key)
    check_target_modules(lora["target_modules"], resolved, settings.key)
    return config


@dataclass
class Fitted:
    trainer: Any
    result: Any  # transformers TrainOutput
    runtime: float  # seconds spent in trainer.train
    tokens: int  # non-padding input tokens seen by this run (not those before a resume)
    resumed_from: Path | None
    packing: dict[str, Any]  # whether batches were packed (or why not), bins and their fill


@dataclass(frozen=True)
class FitOptions:
    """How fit() trains: the settings and paths, and what a distillation run adds to plain fine-tuning."""

    settings: TrainSettings
    paths: TrainPaths
    fingerprint: list[Any]  # what a checkpoint must have been trained on to be resumed
    callbacks: tuple = ()
    trainer_class: type | None = None  # CompletionSFTTrainer when None; distillation's KDTrainer
    trainer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # the trainer class's own arguments
    same_batches: tuple = ()  # other models that run on the trainer's batches (distillation's online teacher)


def fit(model, tokenizer, peft, train_samples: list[dict], val_samples: list[dict], options: FitOptions) -> Fitted:
    """Train with the options' trainer class, resuming a matching checkpoint; save and plot.

    Every process calls it (saving is collective under FSDP and ZeRO-3); only rank 0 writes. The
    caller removes the checkpoints once it has summarised the run. Batches are packed only if every
    model that sees them (options.same_batches too) keeps packed samples apart.
    """
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    from koraft.training.completion import CompletionSFTTrainer

    settings, paths, key = options.settings, options.paths, options.settings.key
    start_process_group()
    patience = settings.early_stopping_patience
    has_eval = bool(val_samples)
    config = sft_config(settings.args, paths.checkpoints, has_eval, has_eval and patience > 0, key)
    fingerprint = hashlib.sha256(json.dumps(options.fingerprint, sort_keys=True, ensure_ascii=False).encode())
    resume_from = prepare_checkpoints(paths.checkpoints, fingerprint.hexdigest())

    model.config.pad_token_id = tokenizer.pad_token_id
    extra = list(options.callbacks)
    if has_eval and patience > 0:
        extra.append(EarlyStoppingCallback(early_stopping_patience=patience))
    max_length = settings.max_length
    models = (model, *options.same_batches)
    plans = [packing_plan(one, settings.packing, max_length) for one in models]
    plan = joint_plan(plans)
    if plan.enabled:
        train_data = pack(train_samples, max_length)
        eval_data = pack(val_samples, max_length) if has_eval else None
        collator = padding_free_collator(tokenizer.pad_token_id)
        for one, one_plan in zip(models, plans, strict=True):
            use_packed_attention(one, one_plan)
        packing = plan.report(*bin_report(train_data, max_length))
    else:
        train_data = Dataset.from_list(train_samples)
        eval_data = Dataset.from_list(val_samples) if has_eval else None
        collator, packing = None, plan.report()
    trainer = (options.trainer_class or CompletionSFTTrainer)(
        model=model,
        args=config,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=extra,
        **options.trainer_kwargs,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    tokens_before = 0
    if resume_from is not None:
        print(f"{key}: resuming from {resume_from}")
        tokens_before = json.loads((resume_from / "trainer_state.json").read_text())["num_input_tokens_seen"]
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.perf_counter() - started
    for one, one_plan in zip(models, plans, strict=True):  # PEFT and FSDP wrap these same modules
        restore_attention(one, one_plan)  # later forwards (agreement, callers) see padded batches

    if is_main_process() and paths.adapter.exists():
        shutil.rmtree(paths.adapter)
    if engine() == "fsdp":  # one loadable file, gathered on rank 0, rather than a shard per process
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(paths.adapter))  # the trainer writes on rank 0 only
    wait_for_everyone()
    if is_main_process():
        if peft is not None:
            sort_target_modules(paths.adapter / "adapter_config.json")
        if paths.plots is not None:
            write_curves(trainer.state.log_history, paths.plots)
    return Fitted(trainer, result, runtime, trainer.state.num_input_tokens_seen - tokens_before, resume_from,
                  packing)


def train(train_rows: list[dict], val_rows: list[dict], settings: TrainSettings, paths: TrainPaths,
          train_path: str = "the train split", callbacks: list | None = None) -> dict[str, Any] | None:
    """Train and save; returns the metrics for metrics/train.json on rank 0, None on the other processes."""
    resolved = resolve_model(settings.model, paths.tiny_models)
    ensure_available(resolved)
    peft = peft_settings(settings, resolved)
    tokenizer = load_tokenizer(resolved)
    train_set, val_set = encode_splits(tokenizer, resolved.family, settings.system_prompt, settings.max_length,
                                       train_rows, val_rows, train_path)
    base = load_model(resolved, settings.quantization if settings.method == "qlora" else None)
    fingerprint = [dataclasses.asdict(settings), train_set.manifest, val_set.manifest]
    fitted = fit(base, tokenizer, peft, train_set.samples, val_set.samples,
                 FitOptions(settings, paths, fingerprint, callbacks=tuple(callbacks or ())))
    if not is_main_process():
        return None
    manifest = write_manifest(paths.adapter, resolved, settings.system_prompt, settings.method, tokenizer, train_set,
                              val_set)
    metrics = summarise(fitted, resolved, settings.method, train_set, val_set, manifest, paths.adapter)
    shutil.rmtree(paths.checkpoints)
    return metrics


def sort_target_modules(config_path: Path) -> None:
    """peft saves `all-linear`, expanded, as a set in hash order: sort it so equal runs give equal bytes."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_curves(log_history: list[dict[str, Any]], plots: Path) -> None:
    """Loss and learning-rate curves at the trainer's global step, as DVCLive plots.

    Written from the log history after training rather than streamed: the history is restored
    from the checkpoint on resume, so an interrupted run ends with the same curves as a clean one.
    """
    from dvclive import Live

    names = {"loss": "train/loss", "eval_loss": "eval/loss", "learning_rate": "train/learning_rate",
             "ce_loss": "train/ce_loss", "kd_loss": "train/kd_loss",  # distillation's two loss terms
             "eval_ce_loss": "eval/ce_loss", "eval_kd_loss": "eval/kd_loss"}
    with Live(str(plots), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for entry in log_history:
            logged = {names[key]: value for key, value in entry.items() if key in names}
            if not logged:
                continue
            live.step = entry["step"]
            for name, value in logged.items():
                live.log_metric(name, value)
    # DVCLive's summary repeats the last logged values of metrics/train.json's losses. The stages declare the
    # curves alone as plots: an uncached output that is neither a metric nor a plot turns DVC's run-cache off.
    (plots / "metrics.json").unlink(missing_ok=True)


def step_weighted_mean(history: list[dict[str, Any]]) -> float | None:
    """The mean train loss over every step, from the logged window means (each weighted by its steps).

    Not the trainer's `training_loss`: after a resume that averages only the resumed steps, while the
    log history is restored from the checkpoint, so this figure is the same for a resumed run."""
    total, steps, previous = 0.0, 0, 0
    for entry in history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            steps += entry["step"] - previous
            previous = entry["step"]
    return round(total / steps, 4) if steps else None


def summarise(fitted: Fitted, resolved: ResolvedModel, method: str, train_set: SampleSet, val_set: SampleSet,
              manifest: dict[str, Any], adapter: Path) -> dict[str, Any]:
    trainer, runtime = fitted.trainer, fitted.runtime
    history = trainer.state.log_history
    train_losses = [entry["loss"] for entry in history if "loss" in entry]
    eval_losses = [(entry["step"], entry["eval_loss"]) for entry in history if "eval_loss" in entry]
    if hasattr(trainer.model, "get_nb_trainable_parameters"):  # PEFT: counts 4-bit weights unpacked
        trainable, total = trainer.model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
    best_step, best_loss = min(eval_losses, key=lambda item: item[1], default=(None, None))
    return {
        "model": {"preset": resolved.preset, "source": resolved.source, "family": resolved.family.name,
                  "method": method},
        "loss": {
            "train_final": round(train_losses[-1], 4) if train_losses else None,
            "train_mean": step_weighted_mean(history),
            "eval_final": round(eval_losses[-1][1], 4) if eval_losses else None,
            "eval_best": round(best_loss, 4) if best_loss is not None else None,
            "eval_best_step": best_step,
        },
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 3),
        "parameters": {"trainable": trainable, "total": total, "trainable_share": round(trainable / total, 6)},
        "samples": {"train": train_set.report(), "val": val_set.report()},
        "packing": fitted.packing,
        "prompts_sha256": manifest["prompts_sha256"],
        "cost": {
            "train_runtime_s": round(runtime, 2),
            "tokens_per_s": round(fitted.tokens / runtime, 1) if runtime else None,
            "peak_memory_mib": peak_memory_mib(),
            "adapter_bytes": directory_bytes(adapter),
            "resumed_from_step": checkpoint_step(fitted.resumed_from) if fitted.resumed_from else None,
            "device": "cuda" if trainer.args.device.type == "cuda" else "cpu",
        },
    }
