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

from koraft.core.config import check_fields, check_number, check_seed, reject_unknown_keys, section
from koraft.core.errors import KoraftError, ParamError
from koraft.core.measure import directory_bytes, peak_memory_mib
from koraft.core.processes import engine, is_main_process, start_process_group, wait_for_everyone
from koraft.models.loading import check_target_modules, load_model, load_tokenizer
from koraft.models.manifest import check_system_prompt, write_manifest
from koraft.models.presets import Family, ResolvedModel, ensure_available, resolve_model
from koraft.models.samples import SampleSet, SampleTokenizer, build_samples
from koraft.training.launch import check_launcher
from koraft.training.packing import (
    bin_report,
    joint_plan,
    pack,
    packing_plan,
    padding_free_collator,
    restore_attention,
    use_packed_attention,
)

METHODS = ("qlora", "lora", "full")
# SFTConfig keys koraft sets itself: the data format, logging and checkpoint layout depend on them.
RESERVED_ARGS = {"output_dir", "report_to", "completion_only_loss", "assistant_only_loss", "dataset_text_field",
                 "packing", "padding_free", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
                 "include_num_input_tokens_seen", "eval_strategy", "save_strategy", "use_cpu",
                 "resume_from_checkpoint", "push_to_hub", "hub_token"}


@dataclass(frozen=True)
class TrainPaths:
    adapter: Path  # the PEFT adapter (or the full model for method: full)
    checkpoints: Path  # scratch space kept between interrupted runs, removed after success
    plots: Path | None  # DVCLive loss curves; None writes none (the benchmarks, which need no DVC)
    tiny_models: Path  # where the base stage builds the embedded tiny models


def train_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The train section, with the top-level seed as SFTConfig's seed (one seed for every stage)."""
    train = section(params, "train")
    if "seed" in section(train, "args", "train."):
        raise ParamError("train.args.seed", "the top-level `seed:` of params.yaml seeds training; remove this key")
    return {**train, "args": {**train["args"], "seed": check_seed(params)}}


TRAIN_KEYS = {"method", "launcher", "accelerate", "lora", "quantization", "packing", "early_stopping_patience", "args"}
DISTILL_KEYS = {"student", "teacher", "loss"}  # distill's own, beside the train keys it may override


def check_train(train: dict[str, Any], key: str = "train") -> dict[str, Any]:
    """Structural checks that need no ML library; key names are checked against the libraries later."""
    reject_unknown_keys(train, TRAIN_KEYS | (DISTILL_KEYS if key == "distill" else set()), key)
    if train.get("method") not in METHODS:
        raise ParamError(f"{key}.method", f"must be one of {', '.join(METHODS)}, got {train.get('method')!r}")
    for name in ("lora", "quantization", "args"):
        if not isinstance(train.get(name), dict):
            raise ParamError(f"{key}.{name}", "section is missing or not a mapping")
    patience = train.get("early_stopping_patience", 0)
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ParamError(f"{key}.early_stopping_patience", f"must be an integer >= 0 (0: off), got {patience!r}")
    reserved = sorted(RESERVED_ARGS & set(train["args"]))
    if reserved:
        raise ParamError(f"{key}.args", f"{reserved} are set by koraft itself")
    if not isinstance(train.get("packing", True), bool):
        raise ParamError(f"{key}.packing", f"must be true or false, got {train['packing']!r}")
    max_length = train["args"].get("max_length")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
        raise ParamError(f"{key}.args.max_length", f"must be an integer >= 8, got {max_length!r}")
    check_launcher(train, key)
    return train


# Ranges the libraries leave unchecked until a step fails: (low, high), both inclusive.
ARG_RANGES = {"learning_rate": (1e-12, 10.0), "num_train_epochs": (1e-6, 1e6),
              "per_device_train_batch_size": (1, 1 << 20), "per_device_eval_batch_size": (1, 1 << 20),
              "gradient_accumulation_steps": (1, 1 << 20), "save_steps": (1e-6, 1e9), "eval_steps": (1e-6, 1e9),
              "logging_steps": (1e-6, 1e9), "warmup_steps": (0, 1e9), "weight_decay": (0, 1e3),
              "max_grad_norm": (0, 1e9), "save_total_limit": (1, 1 << 30)}
LORA_RANGES = {"r": (1, 1 << 16), "lora_alpha": (1e-6, 1e6), "lora_dropout": (0, 0.999)}
QUANT_TYPES = ("nf4", "fp4")


def check_library_settings(train: dict[str, Any], key: str = "train") -> None:
    """Every SFTConfig, LoraConfig and BitsAndBytesConfig value checked (type, range) and each config built
    once, before any tokenizer or model is loaded: a bad value is one line naming its key, not a traceback
    after the model has loaded."""
    import importlib.util

    import torch
    from peft import LoraConfig
    from trl import SFTConfig

    from koraft.models.loading import quantization_config

    check_fields(train["args"], SFTConfig, f"{key}.args")
    for ranges, values, prefix in ((ARG_RANGES, train["args"], f"{key}.args"),
                                   (LORA_RANGES, train["lora"], f"{key}.lora")):
        for name, (low, high) in ranges.items():
            if values.get(name) is not None:
                check_number(values, name, prefix, low, high, integer=isinstance(low, int) and isinstance(high, int))
    if train["args"].get("use_liger_kernel") and (importlib.util.find_spec("liger_kernel") is None
                                                   or not torch.cuda.is_available()):
        raise ParamError(f"{key}.args.use_liger_kernel", "needs the liger-kernel package and a CUDA GPU (its kernels "
                                                         "are Triton); pip install liger-kernel, or set it false")
    max_steps = train["args"].get("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        raise ParamError(f"{key}.args.max_steps", f"must be -1 (use num_train_epochs) or above 0, got {max_steps}")
    # As the run builds it when there is a val split: early stopping (load_best_model_at_end) needs save_steps
    # to be a multiple of eval_steps, which transformers checks only here, before any model loads.
    sft_config(train["args"], Path("unused"), has_eval=True, early_stopping=train.get("early_stopping_patience", 0) > 0,
               key=key)
    check_fields(train["lora"], LoraConfig, f"{key}.lora")
    lora_config(train["lora"], key)
    if train["method"] == "qlora":
        quantization = train["quantization"]
        if quantization.get("bnb_4bit_quant_type", "nf4") not in QUANT_TYPES:
            raise ParamError(f"{key}.quantization.bnb_4bit_quant_type",
                             f"must be one of {', '.join(QUANT_TYPES)}, got {quantization['bnb_4bit_quant_type']!r}")
        quantization_config(quantization, key)


def lora_settings(lora: dict[str, Any], family: Family) -> dict[str, Any]:
    """train.lora with the family's target modules (all-linear, or EXAONE-3's own names) as the default."""
    default = family.target_modules if isinstance(family.target_modules, str) else list(family.target_modules)
    return {"target_modules": default, **lora}


def lora_config(lora: dict[str, Any], key: str = "train"):
    from peft import LoraConfig

    allowed = {f.name for f in dataclasses.fields(LoraConfig)} - {"task_type", "peft_type"}
    reject_unknown_keys(lora, allowed, f"{key}.lora", "keys mirror peft.LoraConfig")
    try:
        return LoraConfig(task_type="CAUSAL_LM", **lora)
    except (TypeError, ValueError) as exc:
        raise ParamError(f"{key}.lora", str(exc).strip().splitlines()[0]) from None


def sft_config(args: dict[str, Any], output_dir: Path, has_eval: bool, early_stopping: bool, key: str = "train"):
    import torch
    from trl import SFTConfig

    reject_unknown_keys(args, {f.name for f in dataclasses.fields(SFTConfig)}, f"{key}.args",
                        "keys mirror trl.SFTConfig")
    settings = {
        **args,
        "output_dir": str(output_dir),
        "report_to": "none",  # curves are written from the trainer's log history, see write_curves
        "completion_only_loss": True,
        "eval_strategy": "steps" if has_eval else "no",
        "save_strategy": "steps",
        "load_best_model_at_end": early_stopping,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "include_num_input_tokens_seen": "non_padding",
        "use_cpu": not torch.cuda.is_available(),
    }
    if "bf16" not in args:  # mixed precision where the hardware has it; fp32 on CPU
        settings["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if args.get("gradient_checkpointing") and "gradient_checkpointing_kwargs" not in args:
        # Non-reentrant checkpointing (torch's recommended one; it works with frozen inputs and LoRA), except
        # under FSDP, where peft's FSDP-QLoRA recipe uses the reentrant one.
        settings["gradient_checkpointing_kwargs"] = {"use_reentrant": engine() == "fsdp"}
    try:
        return SFTConfig(**settings)
    except (TypeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0]
        if "load_best_model_at_end" in message:
            message += (f" ({key}.early_stopping_patience > 0 loads the best checkpoint: set save_steps to a "
                        f"multiple of eval_steps, or the patience to 0)")
        raise ParamError(f"{key}.args", message) from None


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


def peft_settings(section: dict[str, Any], resolved: ResolvedModel, key: str = "train"):
    """The LoraConfig for method lora/qlora (target modules checked against the model), None for full."""
    if section["method"] == "full":
        return None
    lora = lora_settings(section["lora"], resolved.family)
    config = lora_config(lora, key)
    check_target_modules(lora["target_modules"], resolved, key)
    return config


@dataclass
class Fitted:
    trainer: Any
    result: Any  # transformers TrainOutput
    runtime: float  # seconds spent in trainer.train
    tokens: int  # non-padding input tokens seen by this run (not those before a resume)
    resumed_from: Path | None
    packing: dict[str, Any]  # whether batches were packed (or why not), bins and their fill


def fit(model, tokenizer, peft, train_samples: list[dict], val_samples: list[dict], section: dict[str, Any],
        paths: TrainPaths, fingerprint_inputs: list[Any], key: str = "train", callbacks: list | None = None,
        trainer_class=None, trainer_kwargs: dict[str, Any] | None = None, same_batches: tuple = ()) -> Fitted:
    """Train with `trainer_class` (CompletionSFTTrainer by default), resuming a matching checkpoint; save and plot.

    Every process calls it (saving is collective under FSDP and ZeRO-3); only rank 0 writes. The
    caller removes paths.checkpoints once it has summarised the run. `same_batches`: other models that
    run on the trainer's batches (distillation's online teacher); batches are packed only if every
    model keeps packed samples apart.
    """
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    from koraft.training.completion import CompletionSFTTrainer

    start_process_group()
    patience = section.get("early_stopping_patience", 0)
    has_eval = bool(val_samples)
    config = sft_config(section["args"], paths.checkpoints, has_eval, has_eval and patience > 0, key)
    fingerprint = hashlib.sha256(json.dumps(fingerprint_inputs, sort_keys=True, ensure_ascii=False).encode())
    resume_from = prepare_checkpoints(paths.checkpoints, fingerprint.hexdigest())

    model.config.pad_token_id = tokenizer.pad_token_id
    extra = list(callbacks or [])
    if has_eval and patience > 0:
        extra.append(EarlyStoppingCallback(early_stopping_patience=patience))
    max_length = section["args"]["max_length"]
    models = (model, *same_batches)
    plans = [packing_plan(one, section.get("packing", True), max_length) for one in models]
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
    trainer = (trainer_class or CompletionSFTTrainer)(
        model=model,
        args=config,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=extra,
        **(trainer_kwargs or {}),
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


def train(train_rows: list[dict], val_rows: list[dict], model: dict[str, Any], train_params: dict[str, Any],
          paths: TrainPaths, train_path: str = "the train split", callbacks: list | None = None
          ) -> dict[str, Any] | None:
    """Train and save; returns the metrics for metrics/train.json on rank 0, None on the other processes."""
    check_train(train_params)
    resolved = resolve_model(model, paths.tiny_models)
    check_library_settings(train_params)
    ensure_available(resolved)
    peft = peft_settings(train_params, resolved)
    tokenizer = load_tokenizer(resolved)
    system_prompt = check_system_prompt(model.get("system_prompt", ""))
    train_set, val_set = encode_splits(tokenizer, resolved.family, system_prompt, train_params["args"]["max_length"],
                                       train_rows, val_rows, train_path)
    method = train_params["method"]
    base = load_model(resolved, train_params["quantization"] if method == "qlora" else None)
    fitted = fit(base, tokenizer, peft, train_set.samples, val_set.samples, train_params, paths,
                 [model, train_params, train_set.manifest, val_set.manifest], callbacks=callbacks)
    if not is_main_process():
        return None
    manifest = write_manifest(paths.adapter, resolved, system_prompt, method, tokenizer, train_set, val_set)
    metrics = summarise(fitted, resolved, method, train_set, val_set, manifest, paths.adapter)
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
