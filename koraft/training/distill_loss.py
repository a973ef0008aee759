"""Token-level distillation loss: alpha * CE + (1 - alpha) * T^2 * divergence(teacher, student).

Both distributions are softened by the temperature T; the T^2 factor keeps the divergence's
gradients on the scale of the CE term's whatever T is (Hinton et al. 2015). CE is the plain
next-token loss on the reference completion at temperature 1, as SFT computes it.

The teacher is a full distribution (online mode), or its top-k token ids and log-probs plus the
log of the probability mass outside them (offline mode). With a top-k teacher the divergence is
taken over k + 1 outcomes: the k tokens, and "any other token", whose student mass is the
student's probability outside the same k ids. That is the exact divergence of the two coarsened
distributions (a lower bound of the full one), and it equals the full divergence when k covers
the vocabulary, where no tail outcome is added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


@dataclass(frozen=True)
class KDSettings:
    alpha: float  # weight of the CE term; 1 - alpha weighs the divergence
    divergence: str  # forward_kl: KL(teacher || student); reverse_kl: KL(student || teacher); jsd
    temperature: float
    beta: float = 0.5  # jsd only: weight of the teacher in the mixture, 0 < beta < 1


@dataclass
class TeacherDistribution:
    """The teacher's tempered log-probs at N completion positions."""

    log_probs: torch.Tensor  # (N, k); k = vocabulary size when token_ids is None
    token_ids: torch.Tensor | None = None  # (N, k); None: log_probs covers the vocabulary in id order
    tail: torch.Tensor | None = None  # (N,) log of the mass outside token_ids; None when they cover the vocabulary

    def to(self, device: torch.device) -> TeacherDistribution:
        return TeacherDistribution(*(None if t is None else t.to(device)
                                     for t in (self.log_probs, self.token_ids, self.tail)))

    def rows(self, rows: slice) -> TeacherDistribution:
        return TeacherDistribution(*(None if t is None else t[rows]
                                     for t in (self.log_probs, self.token_ids, self.tail)))


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per row from log-probs, with 0 * log 0 = 0 and gradients that stay finite."""
    p = log_p.exp()
    present = p > 0
    log_ratio = torch.where(present, log_p, 0.0) - torch.where(present, log_q, 0.0)
    return (p * log_ratio).sum(-1)


def divergence(student: torch.Tensor, teacher: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence between two categorical distributions given as log-probs over the same outcomes."""
    if kind == "forward_kl":
        return kl(teacher, student)
    if kind == "reverse_kl":
        return kl(student, teacher)
    if kind == "jsd":  # generalized JSD of the GKD paper: beta KL(T || M) + (1 - beta) KL(S || M)
        mixture = torch.logsumexp(torch.stack([teacher + math.log(beta), student + math.log(1 - beta)]), dim=0)
        return beta * kl(teacher, mixture) + (1 - beta) * kl(student, mixture)
    raise ValueError(f"unknown divergence {kind!r}; use one of {', '.join(DIVERGENCES)}")


def token_losses(student_logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherDistribution,
                 settings: KDSettings, vocabulary: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE, T^2-scaled divergence) per completion position; student_logits (N, V), labels (N,).

    The divergence is over the tokenizer's `vocabulary` ids: models may pad their output layer
    beyond it (Qwen2.5 sizes differ there), and no label ever uses those rows.
    """
    logits = student_logits.float()
    ce = F.cross_entropy(logits, labels, reduction="none")
    tempered = F.log_softmax(logits[:, :vocabulary] / settings.temperature, dim=-1)
    if teacher.token_ids is None:
        student, target = tempered, teacher.log_probs
    else:
        ids = teacher.token_ids.long()
        student, target = tempered.gather(-1, ids), teacher.log_probs
        if teacher.tail is not None:
            outside = torch.logsumexp(tempered.scatter(-1, ids, float("-inf")), dim=-1)
            student = torch.cat([student, outside[:, None]], dim=-1)
            target = torch.cat([target, teacher.tail[:, None]], dim=-1)
    scaled = divergence(student, target.float(), settings.divergence, settings.beta) * settings.temperature ** 2
    return ce, scaled


def teacher_from_logits(logits: torch.Tensor, temperature: float, vocabulary: int) -> TeacherDistribution:
    """A full teacher distribution over the tokenizer's vocabulary (extra, padded logit rows dropped)."""
    return TeacherDistribution(F.log_softmax(logits[:, :vocabulary].float() / temperature, dim=-1))


# Completion positions whose full-vocabulary float32 tensors (softmax, divergence terms) exist at once. Gemma-2's
# 256k vocabulary makes one position's float32 row 1 MiB; a 4 x 2,048 batch with 25% completion tokens would
# otherwise hold 2 GiB per tensor, several of them for the backward pass.
LOSS_CHUNK_TOKENS = 1024


def chunked_token_losses(student_logits: torch.Tensor, labels: torch.Tensor,
                         teacher: TeacherDistribution | torch.Tensor, settings: KDSettings, vocabulary: int,
                         chunk: int = LOSS_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """token_losses, `chunk` positions at a time; `teacher` is a distribution, or the online teacher's raw logits
    (softened chunk by chunk). Under autograd each chunk is checkpointed: its float32 intermediates are freed after
    the forward and recomputed in the backward, so only one chunk's exist at a time. Same values as token_losses."""
    from torch.utils.checkpoint import checkpoint

    def chunk_losses(student: torch.Tensor, targets: torch.Tensor, start: int):
        rows = slice(start, start + chunk)
        part = teacher.rows(rows) if isinstance(teacher, TeacherDistribution) else \
            teacher_from_logits(teacher[rows], settings.temperature, vocabulary)
        return token_losses(student, targets, part, settings, vocabulary)

    ce_parts, kd_parts = [], []
    for start in range(0, labels.numel(), chunk):
        student, targets = student_logits[start:start + chunk], labels[start:start + chunk]
        if torch.is_grad_enabled() and student.requires_grad:
            ce, kd = checkpoint(chunk_losses, student, targets, start, use_reentrant=False)
        else:
            ce, kd = chunk_losses(student, targets, start)
        ce_parts.append(ce)
        kd_parts.append(kd)
    if not ce_parts:
        empty = student_logits[:0].float().sum(-1)  # (0,), still in the graph: a batch without completion tokens
        return empty, empty
    return torch.cat(ce_parts), torch.cat(kd_parts)
