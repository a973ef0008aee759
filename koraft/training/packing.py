"""Padding-free packing of prompt/completion samples for train and distill (docs/training.md).

Samples are dealt into `max_length` bins by trl's best-fit decreasing (`trl.pack_dataset`), and a
batch of bins is flattened into one row with `position_ids` restarting at every sample (trl's
padding-free collator), so no padding token is ever computed. What keeps the samples of a row
apart is the attention implementation:

- flash_attention_2: its variable-length kernel, from the sequence boundaries;
- eager and flex_attention: transformers' block-diagonal masks, which `transformers.masking_utils`
  builds from `position_ids` (`find_packed_sequence_indices`) when no attention mask is passed;
- sdpa: koraft's `packed_sdpa`, one causal sdpa call per sample. transformers' sdpa path would build
  the same block-diagonal mask, but sdpa then computes attention over the whole flattened row: on the
  shipped sample (tiny-m, batch 8) that step took 0.59 s against 0.30 s padded; per sample, 0.24 s.

Where none of these is exact (sliding-window layers under sdpa, modeling code from a model
repository) the stage pads instead and says why in its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PACKED_SDPA = "koraft_packed_sdpa"  # registered with transformers' AttentionInterface while training packs


@dataclass(frozen=True)
class PackingPlan:
    enabled: bool
    attention: str  # the implementation the model was loaded with
    reason: str | None = None  # why packing is off, when it was asked for

    def report(self, bins: int | None = None, samples: int | None = None, fill: float | None = None
               ) -> dict[str, Any]:
        return {"enabled": self.enabled, "attention": self.attention, "fallback_reason": self.reason,
                "bins": bins, "samples": samples, "bin_fill": fill}


def packing_plan(model, wanted: bool, max_length: int) -> PackingPlan:
    """Whether packing is exact for this model and attention implementation; off (with the reason) if not."""
    attention = model.config._attn_implementation
    if not wanted:
        return PackingPlan(False, attention)
    if type(base_model(model)).__module__.startswith("transformers_modules"):  # trust_remote_code
        return PackingPlan(False, attention, "the model's modeling code comes from its repository, whose masks may "
                                             "not keep packed samples apart")
    if attention == "sdpa":
        windows = [window for module in model.modules()
                   if isinstance(window := getattr(module, "sliding_window", None), int)]
        if windows and min(windows) < max_length:
            return PackingPlan(False, attention, f"sdpa with sliding-window layers (window {min(windows)} < "
                                                 f"max_length {max_length}): per-sample sdpa would not slide")
    elif attention not in ("eager", "flex_attention", "flash_attention_2"):
        return PackingPlan(False, attention, f"attention {attention!r} is not known to keep packed samples apart")
    return PackingPlan(True, attention)


def joint_plan(plans: list[PackingPlan], others: str = "the online teacher") -> PackingPlan:
    """The first plan (the trained model's), off if any other model on the same batches cannot pack."""
    blocker = next((plan for plan in plans[1:] if not plan.enabled), None)
    if not plans[0].enabled or blocker is None:
        return plans[0]
    return PackingPlan(False, plans[0].attention, f"{others}: {blocker.reason or 'packing off'}")


def packed_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                cu_seq_lens_q: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal sdpa over each packed sample of the row alone, from the collator's sequence boundaries."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise RuntimeError(f"{PACKED_SDPA} runs on padding-free batches only (one row with cu_seq_lens_q)")
    kwargs.pop("is_causal", None)
    bounds = cu_seq_lens_q.tolist()
    parts = [sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                    None, is_causal=True, **kwargs)[0]
             for start, end in zip(bounds[:-1], bounds[1:], strict=True) if end > start]
    return torch.cat(parts, dim=1), None


def use_packed_attention(model, plan: PackingPlan) -> None:
    """Switch an sdpa model to per-sample sdpa for packed training; back with restore_attention."""
    if plan.enabled and plan.attention == "sdpa":
        from transformers import AttentionInterface

        AttentionInterface.register(PACKED_SDPA, packed_sdpa)
        base_model(model).set_attn_implementation(PACKED_SDPA)


def restore_attention(model, plan: PackingPlan) -> None:
    if plan.enabled and plan.attention == "sdpa":
        base_model(model).set_attn_implementation(plan.attention)


def base_model(model):
    """The transformers model under a PEFT wrapper (set_attn_implementation lives there)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def labelled(sample: dict[str, Any]) -> dict[str, Any]:
    """A sample with `labels` (-100 outside the completion) in place of its completion mask."""
    labels = [token if keep else -100 for token, keep in zip(sample["input_ids"], sample["completion_mask"],
                                                              strict=True)]
    return {**{k: v for k, v in sample.items() if k != "completion_mask"}, "labels": labels}


def pack(samples: list[dict[str, Any]], max_length: int):
    """trl's best-fit decreasing bins of at most max_length tokens; every list column packed alongside.

    Packed here rather than by SFTConfig(packing=True): trl's own packing keeps only input_ids and labels,
    dropping distillation's per-token teacher rows, and forces its collator on the trainer."""
    from datasets import Dataset
    from trl import pack_dataset

    if not samples:
        return Dataset.from_list([])
    dataset = Dataset.from_list([labelled(sample) for sample in samples])
    # One map batch: every sample competes for every bin (trl's default batch of 1,000 would bin per slice).
    return pack_dataset(dataset, max_length, "bfd", {"batch_size": len(samples)})


def bin_report(packed, max_length: int) -> tuple[int, int, float | None]:
    """(bins, samples, share of the bins' capacity holding tokens)."""
    if len(packed) == 0:
        return 0, 0, None
    lengths = packed["seq_lengths"]
    tokens = sum(sum(bin_lengths) for bin_lengths in lengths)
    return len(packed), sum(len(bin_lengths) for bin_lengths in lengths), round(tokens / (len(packed) * max_length), 4)


def padding_free_collator(pad_token_id: int):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)
