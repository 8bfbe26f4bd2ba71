"""Structural knowledge distillation between two linear-chain CRFs (pure PyTorch).

The KL divergence between a teacher CRF's and a student CRF's distributions over whole tag
sequences of the same tokens (Wang et al., ACL 2021, "Structural Knowledge Distillation")::

    KL(p_t || p_s) = E_t[log p_t(y)] - E_t[score_s(y)] + log Z_s

A path's score is a sum of emission, transition, start and end terms, so the expectation
needs only the teacher's unary marginals (per position) and its pair marginals (per
adjacent pair of positions), which forward-backward gives exactly. Since the student's
parameters are shared over positions, its transition term needs the pair marginals summed
over time only: ``(B, K, K)`` per batch, never ``(B, T, K, K)``. The gradient of the KL
with respect to the student's emissions is its own marginals minus the teacher's, and with
respect to transitions, start and end its pair/start/end marginals minus the teacher's;
``log Z_s`` comes from ``crf.py``'s ``_LogPartition``, whose backward pass *is* the
student's marginals, so no autograd graph per time step is built.

Both CRFs see the same mask, and each its own constraints and per-position restrictions
(emissions of -inf). Where the teacher puts no mass, nothing is added (no ``0 * -inf``);
where it puts mass on a path the student forbids, the KL is +inf, as it should be.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .crf import (
    REDUCTIONS,
    CRFConstraints,
    _last_index,
    _log_partition,
    _needs_log_space,
    _parallel_posteriors,
    _Posteriors,
    _posteriors,
    _prepare,
    choose_algorithm,
    reduce_losses,
)

__all__ = ["TeacherMarginals", "structural_kl", "teacher_marginals"]


class TeacherMarginals(NamedTuple):
    """What the KL needs from the teacher, for one padded batch of B sequences.

    ``unary (B, T, K)``: P(y_t = k), 0 at padding. ``pairs (B, K, K)``: sum over t of
    P(y_{t-1} = i, y_t = j). ``last (B, K)``: P(y_last = k). ``neg_entropy (B,)`` float64:
    E_t[log p_t(y)], the constant term of the KL (0 for an empty sequence).
    """

    unary: Tensor
    pairs: Tensor
    last: Tensor
    neg_entropy: Tensor


def _pair_marginals(post: _Posteriors, mask: Tensor, trans: Tensor, log_space: bool) -> Tensor:
    """Pair marginals of each sequence summed over time, ``(B, K, K)`` float64.

    As ``crf._transition_marginals``, which sums over the batch too, but per sequence: an
    einsum over time instead of one matmul over (time, batch).
    """
    batch, num_tags = post.log_z.shape[0], trans.shape[-1]
    if post.log_fwd.shape[0] < 2:
        return trans.new_zeros((batch, num_tags, num_tags), dtype=torch.float64)
    valid = mask[:, 1:].t() & torch.isfinite(post.log_z).unsqueeze(0)  # (T-1, B)
    if log_space:  # extreme inputs: exact, but (T-1, B, K, K)
        terms = (
            post.log_fwd[:-1].double().unsqueeze(-1)
            + trans.double()
            + post.log_bwd[1:].double().unsqueeze(-2)
            + post.pair_offset.view(*post.pair_offset.shape, 1, 1)
        )
        terms = torch.where(valid.view(*valid.shape, 1, 1), torch.exp(terms), 0.0)
        return terms.sum(0)
    shift = trans.amax()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    rows = torch.exp(post.pair_offset + shift.double())
    rows = torch.where(valid, rows, torch.zeros_like(rows))
    fwd = torch.exp(post.log_fwd[:-1]).double()
    bwd = torch.exp(post.log_bwd[1:]).double() * rows.unsqueeze(-1)
    pairs = torch.einsum("tbi,tbj->bij", fwd, bwd)
    return torch.exp((trans - shift).double()) * pairs


def _expected_score(
    unary: Tensor, pairs: Tensor, last: Tensor, emissions: Tensor, trans, start, end
) -> Tensor:
    """E[score(y)] per sequence, ``(B,)`` float64, under the distribution whose marginals
    are given; terms where that distribution has no mass are left out (they may be -inf)."""

    def dot(weights: Tensor, scores: Tensor, dims) -> Tensor:
        weights = weights.double()
        return torch.where(weights > 0, weights * scores.double(), 0.0).sum(dims)

    score = dot(unary, emissions, (1, 2))
    score = score + dot(pairs, trans.unsqueeze(0), (1, 2))
    score = score + dot(unary[:, 0], start.unsqueeze(0), 1) if unary.shape[1] else score
    return score + dot(last, end.unsqueeze(0), 1)


def teacher_marginals(
    emissions: Tensor,
    mask: Tensor | None,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    constraints: CRFConstraints | None = None,
    *,
    temperature: float = 1.0,
    algorithm: str = "auto",
) -> TeacherMarginals:
    """The teacher's unary, summed pair and last-position marginals, and its negative entropy.

    Args:
        emissions: ``(B, T, K)`` teacher emissions (-inf: tag not allowed at a position).
        mask: ``(B, T)`` bool, left-aligned; None for all True.
        transitions, start, end: the teacher's CRF scores ``(K, K)``, ``(K,)``, ``(K,)``.
        constraints: allowed-move masks, as in ``crf.py``.
        temperature: every score is divided by it first; > 1 softens the teacher.
        algorithm: the forward-backward scans, as in ``crf.log_partition``.

    Returns:
        ``TeacherMarginals``, computed without gradient (float32, or float64 for float64
        emissions). A sequence the constraints allow no path for gets all-zero marginals.
    """
    if not temperature > 0.0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    with torch.no_grad():
        if temperature != 1.0:
            emissions = emissions / temperature
            transitions, start, end = (p / temperature for p in (transitions, start, end))
        emissions, mask, lengths, trans, start_, end_ = _prepare(
            emissions, mask, transitions, start, end, constraints
        )
        batch, length, num_tags = emissions.shape
        if length == 0:
            zeros = emissions.new_zeros((batch, num_tags))
            pairs = emissions.new_zeros((batch, num_tags, num_tags))
            return TeacherMarginals(emissions.clone(), pairs, zeros, zeros[:, 0].double())
        if choose_algorithm(algorithm, emissions) == "parallel":
            log_space = True  # its vectors are normalised per position: the exact pair sum
            post = _parallel_posteriors(emissions, mask, lengths, trans, start_, end_)
        else:
            log_space = _needs_log_space(emissions, mask, trans)
            post = _posteriors(emissions, mask, lengths, trans, start_, end_, log_space)
        unary = post.unary.transpose(0, 1)  # (B, T, K)
        pairs = _pair_marginals(post, mask, trans, log_space)
        rows = torch.arange(batch, device=emissions.device)
        last = unary[rows, _last_index(lengths)]
        expected = _expected_score(unary, pairs, last, emissions, trans, start_, end_)
        possible = torch.isfinite(post.log_z)
        neg_entropy = torch.where(possible, expected - post.log_z, 0.0)
        neg_entropy = torch.where(lengths > 0, neg_entropy, 0.0)
        dtype = emissions.dtype
        return TeacherMarginals(unary, pairs.to(dtype), last, neg_entropy)


def structural_kl(
    emissions: Tensor,
    mask: Tensor | None,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    teacher: TeacherMarginals,
    constraints: CRFConstraints | None = None,
    *,
    reduction: str = "sum",
    algorithm: str = "auto",
) -> Tensor:
    """KL(p_teacher || p_student) over the tag sequences of each row, differentiable in the
    student's emissions and CRF scores.

    Args:
        emissions: ``(B, T, K)`` student emissions (-inf: tag not allowed at a position).
        mask: ``(B, T)`` bool, the teacher's mask; None for all True.
        transitions, start, end: the student's CRF scores.
        teacher: ``teacher_marginals`` of the same rows (same K, same tag order).
        constraints: the student's allowed-move masks.
        reduction: ``"sum"``, ``"mean"`` (over sequences), ``"token_mean"`` or ``"none"``.
        algorithm: the student's forward(-backward) scans, as in ``crf.log_partition``.

    Returns:
        The KL per sequence ``(B,)`` (``"none"``) or reduced; >= 0 up to rounding, 0 when the
        two CRFs define the same distribution, +inf where the teacher gives probability to
        a path the student forbids, 0 for a row the teacher allows no path for.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if teacher.unary.shape != emissions.shape:
        raise ValueError(
            f"teacher marginals have shape {tuple(teacher.unary.shape)}, the student's "
            f"emissions {tuple(emissions.shape)}: both CRFs must cover the same tokens and tags"
        )
    prepared = _prepare(emissions, mask, transitions, start, end, constraints)
    emissions, mask, _, trans, start_, end_ = prepared
    log_z = _log_partition(*prepared, algorithm=algorithm)
    device = emissions.device
    expected = _expected_score(
        teacher.unary.to(device), teacher.pairs.to(device), teacher.last.to(device),
        emissions, trans, start_, end_,
    )  # fmt: skip
    kl = teacher.neg_entropy.to(device) - expected + log_z
    # A row the teacher allows no path for carries no signal (its marginals are all 0).
    kl = torch.where(teacher.unary.to(device).sum((1, 2)) > 0, kl, 0.0).to(emissions.dtype)
    return reduce_losses(kl, mask, reduction)
