"""The distillation teacher: the train stage's model, its vocabulary check, and its top-k cache.

The teacher is the train stage's model, loaded by koraft.models.trained. Offline distillation stores,
for every completion token of the training and validation samples, the teacher's top-k
tempered log-probs and the log of the mass left outside them, so students can be trained
without the teacher in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from koraft.core.errors import KoraftError
from koraft.training.distill_loss import TeacherDistribution


def check_same_vocabulary(teacher, student, teacher_name: str, student_name: str, probes: list[str]) -> None:
    """Teacher and student must map every string to the same ids: the logits are compared id by id."""
    teacher_tokens = {index: token for token, index in teacher.get_vocab().items()}
    student_tokens = {index: token for token, index in student.get_vocab().items()}
    differing = [index for index in sorted(teacher_tokens.keys() | student_tokens.keys())
                 if teacher_tokens.get(index) != student_tokens.get(index)]
    if differing:
        shown = "; ".join(f"id {index}: teacher {teacher_tokens.get(index)!r}, student {student_tokens.get(index)!r}"
                          for index in differing[:3])
        raise KoraftError(f"distill: the tokenizers of the teacher ({teacher_name}) and the student ({student_name}) "
                          f"differ at {len(differing)} ids ({shown}); logit distillation needs one vocabulary, "
                          f"token for token")
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        pair = (getattr(teacher, role), getattr(student, role))
        if pair[0] != pair[1]:
            raise KoraftError(f"distill: {role} is {pair[0]!r} for the teacher ({teacher_name}) but {pair[1]!r} for "
                              f"the student ({student_name})")
    for text in probes:  # same vocabulary, different merges or normalisation would still split text differently
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for tokenizer in (teacher, student)]
        if ids[0] != ids[1]:
            at = next((i for i, (a, b) in enumerate(zip(*ids, strict=False)) if a != b), min(map(len, ids)))
            raise KoraftError(f"distill: the teacher ({teacher_name}) and student ({student_name}) tokenizers split "
                              f"{text[:40]!r}... differently from token {at} on; logit distillation needs one "
                              f"tokenization")


def completion_start(sample: dict[str, Any]) -> int:
    """Index of a sample's first completion token: the completion is the sample's suffix."""
    return sample["completion_mask"].index(1)


def completion_logits(model, samples: list[dict[str, Any]], batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(sample index, logits at the positions that predict its completion tokens), in length-sorted batches."""
    device = next(model.parameters()).device
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(samples[i]["input_ids"]) for i in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        attention = torch.zeros(len(batch), width, dtype=torch.long)
        for row, index in enumerate(batch):
            ids = samples[index]["input_ids"]
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention[row, :len(ids)] = 1
        # Only the positions that predict a completion token go through the LM head (the union over the batch):
        # every position's logits, 16 x 400 x 262,144 floats for Gemma 3, were most of the cost.
        spans = {index: range(completion_start(samples[index]) - 1, len(samples[index]["input_ids"]) - 1)
                 for index in batch}
        positions = sorted({position for span in spans.values() for position in span})
        column = {position: j for j, position in enumerate(positions)}
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                           logits_to_keep=torch.tensor(positions, device=device)).logits
        for row, index in enumerate(batch):
            yield index, logits[row, [column[position] for position in spans[index]]]


@dataclass
class TopK:
    """Teacher top-k tempered log-probs for every completion token of a sample set, sample after sample."""

    token_ids: torch.Tensor  # (tokens, k) int32, most likely first
    log_probs: torch.Tensor  # (tokens, k) float32
    tail: torch.Tensor  # (tokens,) float32: log of the mass outside the k ids; -inf when k covers the vocabulary
    offsets: torch.Tensor  # (samples + 1,) int64: sample i owns rows offsets[i]:offsets[i + 1]

    def distribution(self, rows: torch.Tensor, covers_vocabulary: bool) -> TeacherDistribution:
        return TeacherDistribution(self.log_probs[rows], self.token_ids[rows],
                                   None if covers_vocabulary else self.tail[rows])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"token_ids": self.token_ids, "log_probs": self.log_probs, "tail": self.tail, "offsets": self.offsets}


def teacher_top_k(model, samples: list[dict[str, Any]], k: int, temperature: float, vocabulary: int,
                  batch_size: int) -> TopK:
    """The teacher's top-k log-probs at temperature T over the tokenizer's vocabulary, per completion token."""
    k = min(k, vocabulary)
    per_sample: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(samples)
    for index, logits in completion_logits(model, samples, batch_size):
        log_probs = torch.log_softmax(logits[:, :vocabulary].float() / temperature, dim=-1)
        top = log_probs.topk(k, dim=-1)
        tail = torch.logsumexp(log_probs.scatter(-1, top.indices, float("-inf")), dim=-1)
        per_sample[index] = (top.indices.to(torch.int32).cpu(), top.values.cpu(), tail.cpu())
    lengths = torch.tensor([0] + [ids.size(0) for ids, _, _ in per_sample])
    return TopK(token_ids=torch.cat([ids for ids, _, _ in per_sample]).contiguous(),
                log_probs=torch.cat([values for _, values, _ in per_sample]).contiguous(),
                tail=torch.cat([tail for _, _, tail in per_sample]).contiguous(),
                offsets=lengths.cumsum(0))


def save_top_k(path: Path, top: TopK) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(top.tensors(), str(path))


def load_top_k(path: Path) -> TopK:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return TopK(**load_file(str(path)))
    except FileNotFoundError:
        raise KoraftError(f"{path}: teacher cache not found; run `dvc repro teacher` first") from None
    except (SafetensorError, TypeError) as exc:  # cut short or written by something else (other tensors: TypeError)
        raise KoraftError(f"{path}: a damaged teacher cache ({type(exc).__name__}: {str(exc)[:120]}); rebuild it: "
                          f"dvc repro -f teacher") from None


def mass_in_top_k(top: TopK) -> dict[str, float]:
    """How much of the teacher's probability the k ids hold: what offline mode keeps token by token."""
    mass = top.log_probs.double().exp().sum(-1)
    return {"mean": round(mass.mean().item(), 4), "p05": round(mass.quantile(0.05).item(), 4),
            "min": round(mass.min().item(), 4)}
