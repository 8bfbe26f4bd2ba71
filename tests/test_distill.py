"""Structural knowledge distillation: the CRF-to-CRF KL against brute-force enumeration and
gradcheck, a student that learns a teacher's paths from its marginals alone, the teacher
corpus reader's cache, and crf_ner learning from it inside spaCy's training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from spacy_crf_ner import crf
from spacy_crf_ner.crf import CRFConstraints
from spacy_crf_ner.crf_distill import structural_kl, teacher_marginals

# --------------------------------------------------------------------------------------------
# The loss


def random_crf(gen: torch.Generator, batch: int, length: int, tags: int, scale: float = 2.0):
    emissions = torch.randn(batch, length, tags, generator=gen, dtype=torch.float64) * scale
    params = [torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in
              ((tags, tags), (tags,), (tags,))]  # fmt: skip
    return emissions, params


def random_setup(seed: int, batch: int, length: int, tags: int, constrained: bool, restricted):
    """Teacher and student CRFs over the same ragged batch; with ``constrained`` random
    allowed moves (tag 0 always reachable); with ``restricted`` random positions where some
    tags are not allowed (-inf emissions, the same for both CRFs)."""
    gen = torch.Generator().manual_seed(seed)
    teacher = random_crf(gen, batch, length, tags)
    student = random_crf(gen, batch, length, tags)
    lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    constraints = None
    if constrained:
        trans = torch.rand(tags, tags, generator=gen) > 0.4
        trans[0, :] = trans[:, 0] = True
        start = (torch.rand(tags, generator=gen) > 0.4) | (torch.arange(tags) == 0)
        end = (torch.rand(tags, generator=gen) > 0.4) | (torch.arange(tags) == 0)
        constraints = CRFConstraints(trans, start, end)
    if restricted:
        forbidden = torch.rand(batch, length, tags, generator=gen) > 0.6
        forbidden[..., 0] = False
        teacher = (teacher[0].masked_fill(forbidden, -math.inf), teacher[1])
        student = (student[0].masked_fill(forbidden, -math.inf), student[1])
    return teacher, student, mask, constraints


def path_log_probs(emissions, length, params, constraints) -> dict[tuple[int, ...], float]:
    """log p(y) of every allowed path of one sequence, by enumerating all K^T paths."""
    trans, start, end = params
    scores = {}
    for path in itertools.product(range(emissions.shape[-1]), repeat=length):
        if constraints is not None and not (
            constraints.start[path[0]]
            and constraints.end[path[-1]]
            and all(constraints.transitions[a, b] for a, b in itertools.pairwise(path))
        ):
            continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, y] for t, y in enumerate(path))
        score = score + sum(trans[a, b] for a, b in itertools.pairwise(path))
        if math.isfinite(float(score)):
            scores[path] = float(score)
    log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
    return {path: score - float(log_z) for path, score in scores.items()}


def brute_force_kl(teacher, student, mask, constraints, temperature=1.0) -> list[float]:
    result = []
    t_em, t_params = teacher
    t_em, t_params = t_em / temperature, [p / temperature for p in t_params]
    for b, length in enumerate(mask.sum(1).tolist()):
        if length == 0:
            result.append(0.0)
            continue
        p_t = path_log_probs(t_em[b], length, t_params, constraints)
        p_s = path_log_probs(student[0][b], length, student[1], constraints)
        result.append(sum(math.exp(lp) * (lp - p_s[path]) for path, lp in p_t.items()))
    return result


def kl_of(teacher, student, mask, constraints, temperature=1.0, reduction="none"):
    marginals = teacher_marginals(
        teacher[0], mask, *teacher[1], constraints, temperature=temperature
    )
    return structural_kl(student[0], mask, *student[1], marginals, constraints, reduction=reduction)


CASES = [
    (seed, constrained, restricted)
    for seed in range(6)
    for constrained in (False, True)
    for restricted in (False, True)
]


@pytest.mark.parametrize("seed,constrained,restricted", CASES)
def test_kl_equals_brute_force(seed, constrained, restricted):
    batch, length, tags = 4, 1 + seed % 4, 2 + seed % 3
    teacher, student, mask, constraints = random_setup(
        seed, batch, length, tags, constrained, restricted
    )
    temperature = 1.0 if seed % 2 else 2.5
    kl = kl_of(teacher, student, mask, constraints, temperature)
    expected = brute_force_kl(teacher, student, mask, constraints, temperature)
    assert kl.dtype == torch.float64
    assert kl.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_kl_float32_matches_float64():
    teacher, student, mask, constraints = random_setup(3, 6, 9, 5, True, True)
    exact = kl_of(teacher, student, mask, constraints)
    as_float = [(x[0].float(), [p.float() for p in x[1]]) for x in (teacher, student)]
    kl = kl_of(*as_float, mask, constraints)
    assert kl.dtype == torch.float32
    assert kl.double().tolist() == pytest.approx(exact.tolist(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("constrained", [False, True])
def test_kl_zero_for_same_crf_positive_otherwise(constrained):
    teacher, student, mask, constraints = random_setup(1, 5, 6, 4, constrained, True)
    same = kl_of(teacher, teacher, mask, constraints)
    assert same.abs().max() < 1e-10
    differs = kl_of(teacher, student, mask, constraints)
    nonempty = mask.any(1)
    assert (differs[nonempty] > 1e-3).all()
    assert (differs[~nonempty] == 0).all()
    # Shifting every emission of a position by a constant leaves the distribution unchanged.
    shifted = (teacher[0] + torch.randn(5, 6, 1, dtype=torch.float64), teacher[1])
    assert kl_of(teacher, shifted, mask, constraints).abs().max() < 1e-9


def test_kl_infinite_where_student_forbids_teacher_mass():
    teacher, student, mask, _ = random_setup(2, 2, 3, 3, False, False)
    blocked = student[0].clone()
    blocked[0, 1, 2] = -math.inf  # the teacher gives tag 2 at (0, 1) some probability
    kl = kl_of(teacher, (blocked, student[1]), mask, None)
    assert math.isinf(float(kl[0])) and kl[0] > 0
    assert math.isfinite(float(kl[1]))


@pytest.mark.parametrize("constrained", [False, True])
def test_kl_gradcheck(constrained):
    teacher, student, mask, constraints = random_setup(4, 3, 5, 3, constrained, True)
    marginals = teacher_marginals(teacher[0], mask, *teacher[1], constraints)
    raw = torch.randn(3, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    forbidden = torch.isinf(student[0])
    inputs = [raw.requires_grad_(), *(p.clone().requires_grad_() for p in student[1])]

    def kl(emissions, trans, start, end):
        emissions = emissions.masked_fill(forbidden, -math.inf)
        return structural_kl(emissions, mask, trans, start, end, marginals, constraints)

    assert torch.autograd.gradcheck(kl, inputs, eps=1e-6, atol=1e-6)


def test_kl_gradient_is_student_minus_teacher_marginals():
    teacher, student, mask, constraints = random_setup(5, 4, 6, 4, True, False)
    marginals = teacher_marginals(teacher[0], mask, *teacher[1], constraints)
    emissions = student[0].clone().requires_grad_()
    structural_kl(emissions, mask, *student[1], marginals, constraints).backward()
    own = crf.marginals(student[0], mask, *student[1], constraints)
    assert torch.allclose(emissions.grad, own - marginals.unary, atol=1e-10)
