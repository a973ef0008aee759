"""The train and distill sections of params.yaml, checked once into the settings the two stages pass down.

Every check runs when the stage loads its section, before any tokenizer or model: koraft's own keys
(structure, ranges) and the library pass-through sections (`args` for trl.SFTConfig, `lora` for
peft.LoraConfig, `quantization` for BitsAndBytesConfig), which stay dicts of the libraries' own keys and are
checked against the libraries' own annotations. The model sections are checked by resolving them (which
loads nothing) and kept as given: the stage resolves them again against the base stage's folder.

distill holds only what differs from train (student, teacher, loss, and any train key it overrides, merged
key by key), so its training settings are train's with those overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koraft.core.config import check_choice, check_fields, check_number, check_seed, reject_unknown_keys, section
from koraft.core.errors import ParamError
from koraft.core.processes import engine
from koraft.models.manifest import check_system_prompt
from koraft.models.presets import resolve_model
from koraft.training.distill_loss import DIVERGENCES, KDSettings
from koraft.training.launch import check_launcher

METHODS = ("qlora", "lora", "full")
# SFTConfig keys koraft sets itself: the data format, logging and checkpoint layout depend on them.
RESERVED_ARGS = {"output_dir", "report_to", "completion_only_loss", "assistant_only_loss", "dataset_text_field",
                 "packing", "padding_free", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
                 "include_num_input_tokens_seen", "eval_strategy", "save_strategy", "use_cpu",
                 "resume_from_checkpoint", "push_to_hub", "hub_token"}
MODES = ("offline", "online")


@dataclass(frozen=True)
class TrainSettings:
    """What fine-tuning needs: the model section and the train section (or distill's merged one), checked."""

    model: dict[str, Any]  # the model section (train: `model:`, distill: `distill.student`)
    system_prompt: str  # model.system_prompt (train); empty for distill, which renders with the teacher's own
    method: str  # qlora, lora or full
    args: dict[str, Any]  # trl.SFTConfig keys, with the top-level seed
    lora: dict[str, Any]  # peft.LoraConfig keys
    quantization: dict[str, Any]  # BitsAndBytesConfig keys (method: qlora)
    packing: bool = True
    early_stopping_patience: int = 0  # 0: off
    launcher: str = "single"
    accelerate: dict[str, Any] | None = None  # launcher: accelerate's section, as written
    key: str = "train"  # the params section, for the messages

    @property
    def max_length(self) -> int:
        return self.args["max_length"]


@dataclass(frozen=True)
class TeacherSettings:
    mode: str  # offline: the teacher stage's top-k cache; online: the teacher runs every step
    top_k: int
    batch_size: int
    quantize: bool  # load the teacher with train's quantization
    quantization: dict[str, Any]  # train.quantization


@dataclass(frozen=True)
class DistillSettings:
    training: TrainSettings  # the student's: train's settings with distill's overrides, model = distill.student
    teacher: TeacherSettings
    loss: KDSettings


def load_train(params: dict[str, Any]) -> TrainSettings:
    return train_settings(section(params, "model"), train_section(params))


def load_distill(params: dict[str, Any]) -> DistillSettings:
    return distill_settings(distill_section(params))


def train_section(params: dict[str, Any]) -> dict[str, Any]:
    """The train section, with the top-level seed as SFTConfig's seed (one seed for every stage)."""
    train = section(params, "train")
    if "seed" in section(train, "args", "train."):
        raise ParamError("train.args.seed", "the top-level `seed:` of params.yaml seeds training; remove this key")
    return {**train, "args": {**train["args"], "seed": check_seed(params)}}


def distill_section(params: dict[str, Any]) -> dict[str, Any]:
    """The distill section merged onto train's: distill holds only what differs (student, teacher, loss, and
    any train key it overrides, sections merged key by key). The teacher keeps train's quantization."""
    train, distill = train_section(params), section(params, "distill")
    if "max_length" in (distill.get("args") or {}):
        raise ParamError("distill.args.max_length", "the teacher and student see the samples the teacher was trained "
                                                    "on: set train.args.max_length only")
    merged = dict(train)
    for key, value in distill.items():
        inherited = train.get(key)
        merged[key] = {**inherited, **value} if isinstance(inherited, dict) and isinstance(value, dict) else value
    merged["teacher"] = {**section(distill, "teacher", "distill."), "quantization": train["quantization"]}
    return merged


def train_settings(model: dict[str, Any], train: dict[str, Any], key: str = "train") -> TrainSettings:
    """The checked settings of a train section (a seeded one, see train_section) and its model section."""
    check_train(train, key)
    check_library_settings(train, key)
    model_key = "model" if key == "train" else "distill.student"
    if not isinstance(model, dict):
        raise ParamError(model_key, "section is missing or not a mapping")
    resolve_model(model, key=model_key)  # loads nothing: every model key checked now, resolved again by the stage
    system_prompt = check_system_prompt(model.get("system_prompt", "")) if key == "train" else ""
    return TrainSettings(model=model, system_prompt=system_prompt, method=train["method"], args=train["args"],
                         lora=train["lora"], quantization=train["quantization"], packing=train.get("packing", True),
                         early_stopping_patience=train.get("early_stopping_patience", 0),
                         launcher=train.get("launcher", "single"), accelerate=train.get("accelerate"), key=key)


def distill_settings(distill: dict[str, Any]) -> DistillSettings:
    """The checked settings of a merged distill section (see distill_section)."""
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
    training = train_settings(distill["student"], distill, key="distill")
    return DistillSettings(
        training=training,
        teacher=TeacherSettings(mode=teacher["mode"], top_k=teacher["top_k"], batch_size=teacher["batch_size"],
                                quantize=teacher.get("quantize", False), quantization=teacher["quantization"]),
        loss=KDSettings(alpha=float(alpha), divergence=divergence, temperature=float(temperature), beta=float(beta)))


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
