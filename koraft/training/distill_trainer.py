"""KDTrainer: trl's SFTTrainer with the distillation loss of koraft.training.distill_loss, nothing else changed."""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from koraft.core.errors import KoraftError
from koraft.training.completion import CompletionPositions, keeps_logits, token_mean
from koraft.training.distill_loss import KDSettings, chunked_token_losses
from koraft.training.teacher_cache import TopK


class KDTrainer(SFTTrainer):
    """SFTTrainer whose loss is alpha * CE + (1 - alpha) * T^2 * divergence to the teacher.

    Everything else (PEFT/QLoRA set-up, collation with completion-only labels, packing, checkpoints,
    evaluation) is SFTTrainer's. The teacher is a model (online) or a TopK table (offline) whose rows
    each batch finds through the samples' `teacher_rows` column: for every token whose label is a
    completion token, its row in the table; -1 elsewhere.

    Logits are computed only at the positions that predict a completion token (`logits_to_keep`),
    for the student and the online teacher: RAFT prompts are long and completions short, so the
    full (batch, length, vocabulary) logits would be mostly thrown away.
    """

    TEACHER_COLUMNS = ("teacher_rows",)

    def __init__(self, *args, kd: KDSettings, vocabulary: int, teacher=None, top_k: TopK | None = None,
                 covers_vocabulary: bool = False, **kwargs):
        self.kd, self.vocabulary = kd, vocabulary  # set first: SFTTrainer.__init__ may already ask for columns
        self.teacher, self.top_k, self.covers_vocabulary = teacher, top_k, covers_vocabulary
        super().__init__(*args, **kwargs)
        if teacher is not None and not getattr(teacher, "is_loaded_in_4bit", False):
            self.teacher = teacher.to(self.args.device)
        if top_k is not None:
            self.data_collator = TeacherRowsCollator(self.data_collator)
        self.keeps_logits = keeps_logits(self.model, *([self.teacher] if teacher is not None else []))

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.top_k is not None:  # keep the cache pointers through remove_unused_columns
            self._signature_columns = [*self._signature_columns, *self.TEACHER_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        rows = inputs.pop("teacher_rows", None)
        where = CompletionPositions.of(inputs.pop("labels"), self.keeps_logits)
        outputs = model(**inputs, **where.model_kwargs(), use_cache=False)
        student_logits = where.take(outputs.logits)
        if self.top_k is not None:
            teacher = self.top_k.distribution(self._cache_rows(rows, where.positions), self.covers_vocabulary)
            teacher = teacher.to(student_logits.device)
        else:
            with torch.no_grad():
                logits = self.teacher(**inputs, **where.model_kwargs(), use_cache=False).logits
                teacher = where.take(logits).to(student_logits.device)
        ce, kd = chunked_token_losses(student_logits, where.labels(), teacher, self.kd, self.vocabulary)
        loss = token_mean(self, (self.kd.alpha * ce + (1 - self.kd.alpha) * kd).sum(), where, num_items_in_batch)
        if ce.numel():
            self._metrics[mode]["ce_loss"].append(ce.mean().item())
            self._metrics[mode]["kd_loss"].append(kd.mean().item())
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _cache_rows(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The table rows of the batch's completion tokens, in the order the logits are taken."""
        found = rows[:, 1:][positions].cpu()
        if found.numel() != int((rows >= 0).sum()) or bool((found < 0).any()):
            raise KoraftError("distill: the batch's completion tokens and its teacher-cache rows disagree; "
                              "rerun `dvc repro teacher`")
        return found


class TeacherRowsCollator:
    """trl's collator, plus each token's row in the teacher cache, laid out as the collator lays out the tokens:
    one flattened row when it is padding-free, else right-padded rows; -1 on padding."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        rows = [torch.tensor(example["teacher_rows"]) for example in examples]
        if getattr(self.collator, "padding_free", False):
            rows = [torch.cat(rows)]
        table = torch.full((len(rows), batch["input_ids"].shape[1]), -1, dtype=torch.long)
        for index, row in enumerate(rows):
            table[index, :len(row)] = row
        batch["teacher_rows"] = table
        return batch
