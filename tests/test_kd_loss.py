"""The distillation loss against values computed by hand on three- and four-token distributions."""

from __future__ import annotations

import math

import pytest
import torch

from koraft.training.distill_loss import (
    KDSettings,
    TeacherDistribution,
    chunked_token_losses,
    divergence,
    teacher_from_logits,
    token_losses,
)

# Teacher P and student Q over three tokens.
P = [0.7, 0.2, 0.1]
Q = [0.4, 0.4, 0.2]
# By hand, natural logs:
# KL(P||Q) = 0.7 ln(0.7/0.4) + 0.2 ln(0.2/0.4) + 0.1 ln(0.1/0.2) = 0.391731 - 0.138629 - 0.069315
FORWARD = 0.183787
# KL(Q||P) = 0.4 ln(0.4/0.7) + 0.4 ln(0.4/0.2) + 0.2 ln(0.2/0.1) = -0.223846 + 0.277259 + 0.138629
REVERSE = 0.192042
# beta = 0.5: M = (0.55, 0.30, 0.15); KL(P||M) = 0.047174, KL(Q||M) = 0.045228; JSD = (0.047174 + 0.045228) / 2
JSD = 0.046201


def log(values: list[float]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64).log()


@pytest.mark.parametrize("kind, expected", [("forward_kl", FORWARD), ("reverse_kl", REVERSE), ("jsd", JSD)])
def test_each_divergence_matches_the_hand_computed_value(kind, expected):
    assert divergence(log(Q), log(P), kind, beta=0.5).item() == pytest.approx(expected, abs=1e-6)


def test_jsd_moves_towards_each_kl_at_the_ends_of_beta():
    # As beta -> 0 the generalized JSD, divided by beta, tends to KL(P || Q); as beta -> 1, divided by 1 - beta,
    # to KL(Q || P) (the GKD paper's interpolation).
    assert (divergence(log(Q), log(P), "jsd", beta=1e-4) / 1e-4).item() == pytest.approx(FORWARD, rel=1e-3)
    assert (divergence(log(Q), log(P), "jsd", beta=1 - 1e-4) / 1e-4).item() == pytest.approx(REVERSE, rel=1e-3)


def test_identical_distributions_have_zero_divergence_and_zero_probabilities_are_fine():
    same = log([0.5, 0.5, 0.0])  # log 0 = -inf: 0 log 0 counts as 0
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert divergence(same, same, kind).item() == pytest.approx(0.0, abs=1e-12)


def test_temperature_softens_both_sides_and_scales_by_t_squared():
    temperature = 2.0
    student_logits = (temperature * log(Q)).float()  # softmax(z / T) = Q
    teacher = TeacherDistribution(log(P).float())  # already tempered
    ce, kd = token_losses(student_logits, torch.tensor([0]), teacher,
                          KDSettings(alpha=0.5, divergence="forward_kl", temperature=temperature), vocabulary=3)
    assert kd.item() == pytest.approx(temperature ** 2 * FORWARD, abs=1e-5)
    # CE is at temperature 1: softmax(2 ln Q) = Q^2 / sum(Q^2) = (0.16, 0.16, 0.04) / 0.36
    assert ce.item() == pytest.approx(math.log(0.36 / 0.16), abs=1e-5)


def test_top_k_teacher_compares_the_k_tokens_and_the_rest_as_one_outcome():
    teacher_full, student_full = [0.6, 0.2, 0.1, 0.1], [0.3, 0.3, 0.3, 0.1]
    student_logits = log(student_full).float()
    settings = KDSettings(alpha=0.0, divergence="forward_kl", temperature=1.0)
    top2 = TeacherDistribution(log_probs=log([0.6, 0.2]).float(), token_ids=torch.tensor([[0, 1]]),
                               tail=torch.tensor([math.log(0.2)]))
    _, kd = token_losses(student_logits, torch.tensor([0]), top2, settings, vocabulary=4)
    # By hand over (token 0, token 1, other): 0.6 ln(0.6/0.3) + 0.2 ln(0.2/0.3) + 0.2 ln(0.2/0.4)
    assert kd.item() == pytest.approx(0.415888 - 0.081093 - 0.138629, abs=1e-5)
    _, full = token_losses(student_logits, torch.tensor([0]), TeacherDistribution(log(teacher_full).float()),
                           settings, vocabulary=4)
    assert full.item() == pytest.approx(0.224934, abs=1e-5)  # the full KL is larger: coarsening loses information
    every = TeacherDistribution(log_probs=log([0.1, 0.6, 0.1, 0.2]).float(), token_ids=torch.tensor([[2, 0, 3, 1]]))
    _, covering = token_losses(student_logits, torch.tensor([0]), every, settings, vocabulary=4)
    assert covering.item() == pytest.approx(full.item(), abs=1e-6)  # k = V, in any order: the full divergence


def test_gradients_stay_finite_when_the_teacher_has_zero_mass_somewhere():
    """Forward KL and JSD ignore tokens the teacher rules out (0 log 0); reverse KL is truly infinite there.

    A teacher's log-softmax is never -inf in practice; the top-k tail outcome is only added when k < V.
    """
    student_logits = torch.tensor([[1.0, 0.5, -0.5]], requires_grad=True)
    teacher = TeacherDistribution(log([0.5, 0.5, 0.0]).float())
    for kind in ("forward_kl", "jsd", "reverse_kl"):
        _, kd = token_losses(student_logits, torch.tensor([0]), teacher,
                             KDSettings(alpha=0.0, divergence=kind, temperature=1.0), vocabulary=3)
        if kind == "reverse_kl":
            assert kd.item() == math.inf
            continue
        (grad,) = torch.autograd.grad(kd.sum(), student_logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, kind


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_chunked_losses_and_gradients_equal_the_whole_batch(kind):
    """The chunked loss (checkpointed per chunk) gives the same values and gradients, for a top-k teacher
    and for raw online teacher logits; chunks of 7 over 50 positions leave a ragged last chunk."""
    torch.manual_seed(0)
    settings = KDSettings(alpha=0.4, divergence=kind, temperature=2.0, beta=0.3)
    student = torch.randn(50, 30, requires_grad=True)
    labels = torch.randint(0, 30, (50,))
    teacher_logits = torch.randn(50, 30)
    full = teacher_from_logits(teacher_logits, settings.temperature, 30)
    top = full.log_probs.topk(5, dim=-1)
    tail = torch.logsumexp(full.log_probs.scatter(-1, top.indices, float("-inf")), dim=-1)
    for teacher, chunked_teacher in ((full, teacher_logits), (TeacherDistribution(top.values, top.indices, tail),) * 2):
        ce, kd = token_losses(student, labels, teacher, settings, 30)
        (ce.sum() + kd.sum()).backward()
        expected, student.grad = student.grad.clone(), None
        ce_chunked, kd_chunked = chunked_token_losses(student, labels, chunked_teacher, settings, 30, chunk=7)
        (ce_chunked.sum() + kd_chunked.sum()).backward()
        torch.testing.assert_close(ce_chunked, ce, rtol=0, atol=1e-6)
        torch.testing.assert_close(kd_chunked, kd, rtol=0, atol=1e-6)
        torch.testing.assert_close(student.grad, expected, rtol=0, atol=1e-6)
        student.grad = None
    empty_ce, empty_kd = chunked_token_losses(student[:0], labels[:0], teacher_logits[:0], settings, 30)
    assert empty_ce.shape == (0,) and empty_ce.sum().requires_grad  # a batch without completion tokens
