"""Logits only where a completion token is predicted: the train stage's trainer and the shared selection.

A RAFT sample is a long prompt (documents) and a short answer, and only the answer carries a label, so
projecting every position through the LM head computes a (tokens, vocabulary) product that the loss then
throws away. trl's SFTTrainer avoids it with its fused LM head, but compacts to the labelled positions
only on Triton devices (CUDA, XPU): elsewhere it scores every position, keeping tile shapes fixed for
compiled backends. On a CPU that is most of a step. Measured with benchmarks/train_throughput.py
(tiny-m, shipped sample, batch 8, 2-core Xeon): scoring only the completion positions gave 1.9-2.4x the
tokens/s for every recipe, with the same loss. So where trl would score every position, koraft's trainer
asks the model for the completion positions' logits alone (`logits_to_keep`) and takes the same
cross-entropy; on CUDA and XPU it is trl's own loss, unchanged.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from koraft.training.packing import base_model


@dataclass(frozen=True)
class CompletionPositions:
    """Where a batch predicts completion tokens: logits at position p score the label at p + 1."""

    targets: torch.Tensor  # labels shifted left: (batch, length - 1)
    positions: torch.Tensor  # bool, same shape: the target is a completion token
    keep: torch.Tensor | None  # the columns asked of the model (`logits_to_keep`); None: every column

    @classmethod
    def of(cls, labels: torch.Tensor, keeps_logits: bool) -> CompletionPositions:
        targets = labels[:, 1:]
        positions = targets != -100
        # a padded batch: the columns where any row predicts a completion token; a packed one has one row
        keep = positions.any(dim=0).nonzero().squeeze(1) if keeps_logits else None
        return cls(targets, positions, keep)

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        return {} if self.keep is None else {"logits_to_keep": self.keep}

    def take(self, logits: torch.Tensor) -> torch.Tensor:
        """(completion tokens, vocabulary): the rows of `logits` (as the model returned them) that score a label."""
        if self.keep is None:
            return logits[:, :-1][self.positions]
        return logits[self.positions[:, self.keep]]

    def labels(self) -> torch.Tensor:
        return self.targets[self.positions]


def keeps_logits(*models) -> bool:
    """Whether every model's forward takes `logits_to_keep` (modeling code from a model repository may not)."""
    return all("logits_to_keep" in inspect.signature(base_model(model).forward).parameters for model in models)


def token_mean(trainer, total: torch.Tensor, where: CompletionPositions, num_items_in_batch=None) -> torch.Tensor:
    """A loss summed over the completion tokens, normalised as SFTTrainer normalises its own: by the tokens of
    the whole accumulated batch when the trainer counts them (times the processes, since DDP averages the
    gradients), else by this batch's; a batch without completion tokens gives 0, not 0 / 0."""
    count = where.positions.sum() if num_items_in_batch is None else num_items_in_batch
    loss = total / torch.as_tensor(count).to(total.device).clamp(min=1)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * trainer.accelerator.num_processes
    return loss


class CompletionSFTTrainer(SFTTrainer):
    """trl's SFTTrainer; on devices where trl's fused LM head would score every position, the same
    completion-only cross-entropy from the completion positions' logits alone. Everything else is trl's."""

    TRITON_DEVICES = ("cuda", "xpu")  # where trl's fused head already compacts

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # trl's other losses (dft, label smoothing, a custom loss function, MoE aux loss) stay trl's
        self.scores_completions_only = (
            self.args.device.type not in self.TRITON_DEVICES and self.args.loss_type == "nll"
            and self.compute_loss_func is None and self.label_smoother is None and not self.aux_loss_enabled
            and keeps_logits(self.model))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.scores_completions_only:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)  # prediction_step reads the labels afterwards
        where = CompletionPositions.of(inputs.pop("labels"), keeps_logits=True)
        outputs = model(**inputs, **where.model_kwargs(), use_cache=False)
        logits, labels = where.take(outputs.logits).float(), where.labels()
        loss = token_mean(self, F.cross_entropy(logits, labels, reduction="sum"), where, num_items_in_batch)
        if labels.numel():  # the two metrics trl logs, on the same tokens
            with torch.no_grad():
                log_probs = logits.log_softmax(dim=-1)
                entropy = -(log_probs.exp() * log_probs).sum(dim=-1).mean()
                accuracy = (logits.argmax(dim=-1) == labels).float().mean()
            self._metrics[mode]["entropy"].append(entropy.item())
            self._metrics[mode]["mean_token_accuracy"].append(accuracy.item())
        return (loss, outputs) if return_outputs else loss
