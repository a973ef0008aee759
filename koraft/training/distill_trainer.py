"""KDTrainer: trl's SFTTrainer with the distillation loss of koraft.training.distill_loss, nothing else changed."""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from koraft.core.errors import KoraftError
from koraft.training.distill_loss import KDSettings, teacher_from_logits, token_losses
from koraft.training.teacher_cache import TopK


class KDTrainer(SFTTrainer):
    """SFTTrainer whose loss is alpha * CE + (1 - alpha) * T^2 * divergence to the teacher.

    Everything else (PEFT/QLoRA set-up, collation with completion-only labels, checkpoints,
    evaluation) is SFTTrainer's. The teacher is a model (online) or a TopK table (offline) whose
    rows each batch finds through the samples' `teacher_offset` and `teacher_count` columns.
    """

    TEACHER_COLUMNS = ("teacher_offset", "teacher_count")

    def __init__(self, *args, kd: KDSettings, vocabulary: int, teacher=None, top_k: TopK | None = None,
                 covers_vocabulary: bool = False, **kwargs):
        self.kd, self.vocabulary = kd, vocabulary  # set first: SFTTrainer.__init__ may already ask for columns
        self.teacher, self.top_k, self.covers_vocabulary = teacher, top_k, covers_vocabulary
        super().__init__(*args, **kwargs)
        if teacher is not None and not getattr(teacher, "is_loaded_in_4bit", False):
            self.teacher = teacher.to(self.args.device)
        if top_k is not None:
            self.data_collator = TeacherRowsCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.top_k is not None:  # keep the cache pointers through remove_unused_columns
            self._signature_columns = [*self._signature_columns, *self.TEACHER_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        offsets, counts = inputs.pop("teacher_offset", None), inputs.pop("teacher_count", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        targets = labels[:, 1:]
        positions = targets != -100  # logits at position p predict the token at p + 1
        student_logits = outputs.logits[:, :-1][positions]
        if self.top_k is not None:
            rows = self._cache_rows(offsets, counts, positions)
            teacher = self.top_k.distribution(rows, self.covers_vocabulary).to(student_logits.device)
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(**inputs, use_cache=False).logits[:, :-1][positions]
            teacher = teacher_from_logits(teacher_logits.to(student_logits.device), self.kd.temperature,
                                          self.vocabulary)
        ce, kd = token_losses(student_logits, targets[positions], teacher, self.kd, self.vocabulary)
        count = positions.sum() if num_items_in_batch is None else num_items_in_batch
        loss = (self.kd.alpha * ce + (1 - self.kd.alpha) * kd).sum() / torch.as_tensor(count).to(ce.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as SFTTrainer: DDP averages the gradients
        if ce.numel():
            self._metrics[mode]["ce_loss"].append(ce.mean().item())
            self._metrics[mode]["kd_loss"].append(kd.mean().item())
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _cache_rows(offsets: torch.Tensor, counts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        found = positions.sum(dim=1).cpu()
        if not torch.equal(found, counts.cpu()):
            raise KoraftError(f"distill: batch has {found.tolist()} completion tokens per sample, the teacher cache "
                              f"{counts.tolist()}; rerun `dvc repro teacher`")
        return torch.cat([torch.arange(int(offset), int(offset) + int(count))
                          for offset, count in zip(offsets.cpu(), counts.cpu(), strict=True)])


class TeacherRowsCollator:
    """trl's collator, plus each sample's rows in the teacher cache."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        for column in KDTrainer.TEACHER_COLUMNS:
            batch[column] = torch.tensor([example[column] for example in examples])
        return batch
