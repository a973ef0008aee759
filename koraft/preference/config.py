"""The prefer section of params.yaml, checked before any model loads.

`prefer.args` holds the chosen method's own trl config keys (DPOConfig, ORPOConfig, KTOConfig or CPOConfig for
SimPO), checked against that class like train.args against SFTConfig. The model, the LoRA/QLoRA method, the
quantization and max_length are train's: preference tuning continues the train stage's adapter.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koraft.core.config import check_fields, check_number, check_seed, reject_unknown_keys, section
from koraft.core.errors import ParamError
from koraft.training.config import ARG_RANGES, TrainSettings, load_train

# method -> (module, config class, trainer class, the config values koraft sets for the method)
METHODS = {
    "dpo": ("trl", "DPOConfig", "DPOTrainer", {}),
    "kto": ("trl", "KTOConfig", "KTOTrainer", {}),
    # ORPO and CPO live in trl.experimental in trl 1.x: pinned, and exercised by the tests
    # (their collator needs the raw columns, which they otherwise switch on themselves with a warning)
    "orpo": ("trl.experimental.orpo", "ORPOConfig", "ORPOTrainer", {"remove_unused_columns": False}),
    "simpo": ("trl.experimental.cpo", "CPOConfig", "CPOTrainer",
              {"loss_type": "simpo", "remove_unused_columns": False}),
}
PAIRED = ("dpo", "orpo", "simpo")  # KTO takes the same sides unpaired, as good and bad examples
SOURCES = ("distractor", "sentence", "abstain", "quote", "on_policy")
# Config keys koraft sets itself: layout, logging, data format and the length (prompts are fitted by koraft).
RESERVED_ARGS = {"output_dir", "report_to", "eval_strategy", "save_strategy", "use_cpu", "max_length",
                 "max_prompt_length", "max_completion_length", "push_to_hub", "hub_token", "seed",
                 "resume_from_checkpoint", "load_best_model_at_end", "dataset_text_field"}
KEYS = {"method", "sources", "on_policy", "args"}
ON_POLICY_KEYS = {"records", "f1_below", "max_new_tokens", "batch_size"}


@dataclass(frozen=True)
class OnPolicySettings:
    records: int | None  # train records the SFT model answers (a seeded sample); None: all
    f1_below: float  # a wrong answer (EM 0) with F1 below this is a rejected side
    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class PairSettings:
    """What the pairs stage needs: the sources and the on-policy sampling."""

    sources: tuple[str, ...]
    on_policy: OnPolicySettings
    seed: int
    train: TrainSettings  # the model, system prompt, method and max_length of the adapter being continued
    abstain_answer: str | None  # raft.abstain_answer where raft.omitted_golden_target is abstain


@dataclass(frozen=True)
class PreferSettings:
    method: str
    args: dict[str, Any]  # the method's trl config keys, with the top-level seed
    train: TrainSettings


def load_pairs(params: dict[str, Any]) -> PairSettings:
    prefer = _prefer_section(params)
    sources = prefer.get("sources")
    if not isinstance(sources, list) or not sources or len(set(sources)) != len(sources) or any(
            source not in SOURCES for source in sources):
        raise ParamError("prefer.sources", f"a list of distinct sources ({', '.join(SOURCES)}), got {sources!r}")
    on_policy = section(prefer, "on_policy", "prefer.")
    reject_unknown_keys(on_policy, ON_POLICY_KEYS, "prefer.on_policy")
    if on_policy.get("records") is not None:
        check_number(on_policy, "records", "prefer.on_policy", 1, 10**9, integer=True)
    raft = section(params, "raft")
    abstain = raft.get("abstain_answer") if raft.get("omitted_golden_target") == "abstain" else None
    return PairSettings(
        sources=tuple(source for source in SOURCES if source in sources),
        on_policy=OnPolicySettings(
            records=on_policy.get("records"),
            f1_below=float(check_number(on_policy, "f1_below", "prefer.on_policy", 0.0, 1.0)),
            max_new_tokens=int(check_number(on_policy, "max_new_tokens", "prefer.on_policy", 1, 1 << 16, True)),
            batch_size=int(check_number(on_policy, "batch_size", "prefer.on_policy", 1, 4096, True))),
        seed=check_seed(params), train=load_sft(params), abstain_answer=abstain)


def load_prefer(params: dict[str, Any]) -> PreferSettings:
    """The method and its checked trl config keys; a bad key or value is one line naming it."""
    prefer = _prefer_section(params)
    method = prefer.get("method")
    if method not in METHODS:
        raise ParamError("prefer.method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    args = section(prefer, "args", "prefer.")
    reserved = sorted(RESERVED_ARGS & set(args) | set(METHODS[method][3]) & set(args))
    if reserved:
        raise ParamError("prefer.args", f"{reserved} are set by koraft itself")
    args = {**args, "seed": check_seed(params)}
    settings = PreferSettings(method=method, args=args, train=load_sft(params))
    config_class = method_classes(method)[0]
    reject_unknown_keys(args, {field.name for field in dataclasses.fields(config_class)}, "prefer.args",
                        f"keys mirror trl's {config_class.__name__} (prefer.method: {method})")
    check_fields(args, config_class, "prefer.args")
    for name, (low, high) in ARG_RANGES.items():
        if args.get(name) is not None:
            check_number(args, name, "prefer.args", low, high, integer=isinstance(low, int) and isinstance(high, int))
    trainer_config(settings, Path("unused"))  # the class's own checks, before any model loads
    return settings


def method_classes(method: str) -> tuple[type, type]:
    """(config class, trainer class) of a method."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO are chosen knowingly, and pinned
    module_name, config_name, trainer_name, _ = METHODS[method]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, trainer_name)


def trainer_config(settings: PreferSettings, output_dir: Path, defaults: dict[str, Any] | None = None):
    """The method's trl config: prefer.args with what koraft sets. max_length is train's, which each pair's prompt
    is fitted to with its longer side, so the trainers never truncate. `defaults` apply where prefer.args is silent."""
    import torch

    config_class = method_classes(settings.method)[0]
    values = {**(defaults or {}), **settings.args, **METHODS[settings.method][3], "output_dir": str(output_dir),
              "report_to": "none", "eval_strategy": "no", "save_strategy": "no",
              "use_cpu": not torch.cuda.is_available(), "max_length": settings.train.max_length}
    if settings.method == "simpo":
        values.setdefault("cpo_alpha", 0.0)  # SimPO proper; a cpo_alpha above 0 adds CPO's SFT term
    if "bf16" not in settings.args:
        values["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise ParamError("prefer.args", str(exc).strip().splitlines()[0]) from None


def _prefer_section(params: dict[str, Any]) -> dict[str, Any]:
    prefer = section(params, "prefer")
    reject_unknown_keys(prefer, KEYS, "prefer")
    return prefer


def load_sft(params: dict[str, Any]) -> TrainSettings:
    train = load_train(params)
    if train.method == "full":
        raise ParamError("train.method", "prefer continues the train stage's LoRA adapter: train.method must be lora "
                                         "or qlora (a full model would need a second copy as the reference)")
    return train
