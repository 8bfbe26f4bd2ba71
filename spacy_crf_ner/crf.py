"""A batched linear-chain CRF in pure PyTorch (no spaCy import).

Conventions follow pytorch-crf so weights can be ported: ``transitions[i, j]`` scores moving
from tag ``i`` to tag ``j``, ``start[j]`` scores a sequence beginning with ``j`` and
``end[i]`` one ending with ``i``. Inputs are batch-first padded emissions ``(B, T, K)`` and a
boolean ``mask (B, T)`` whose True values are left-aligned; a sequence of length 0 has
log Z = 0 and an empty path.

Two scans serve every algorithm:

* a sum-product scan (``_sum_product_scan``) in the exp-matmul form with per-step
  normalisation, run left-to-right for log Z and right-to-left (on per-sequence reversed
  emissions, with transposed transitions) for the backward vectors; together they give the
  marginals, which are also the gradient of log Z, so ``log_partition`` has a custom backward
  and never stores an autograd graph per time step;
* a max-plus scan (``_max_plus_scan``) that keeps the k best partial scores per tag: k = 1 is
  Viterbi, k > 1 is n-best. Backpointers of the whole batch are followed with ``gather``; there
  is no loop over the batch and no host synchronisation.

Every algorithm but n-best also has a parallel form (``algorithm="parallel"``, section
"Parallel scan"): prefix products of the K x K step matrices in the log-sum-exp semiring (log Z,
forward and backward vectors, marginals) or the max-plus semiring (Viterbi, whose backtrack
becomes pointer jumping over composed index maps), O(log T) sequential depth and no host
synchronisation; ``"auto"`` (the default) chooses by device and shape (``choose_algorithm``).

The forward and backward vectors also give the exact posterior of any labelled segment
(``SpanPosteriors``: built once per batch, then asked for any number of segments in chunks).
Per-position restrictions (partial labels, tags a token may not take) are emissions of -inf.

Hard constraints (an allowed-transition mask plus allowed start/end tags) enter every algorithm
by setting forbidden scores to -inf, so no invalid path is decoded and no probability mass is
spent on one. Everything is computed in float32 (float64 if the emissions are float64), whatever
the emissions' dtype, and sums that grow with the sequence length are accumulated in float64.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "ALGORITHMS",
    "CRFConstraints",
    "LinearChainCRF",
    "SpanPosteriors",
    "choose_algorithm",
    "gold_score",
    "log_partition",
    "marginals",
    "nbest",
    "nll",
    "segment_probabilities",
    "viterbi",
]

REDUCTIONS = ("sum", "mean", "none", "token_mean")
ALGORITHMS = ("auto", "sequential", "parallel")
# "auto" takes the parallel scan on CUDA from this many time steps on. A first estimate from
# the op counts of benchmarks/crf_ops.py (the sequential scans launch ~K-independent kernels
# per step, the parallel scan ~60 per level); to be set from benchmarks/gpu_suite.sh.
AUTO_PARALLEL_MIN_LENGTH = 64
# Max-plus scores are re-centred this often so that their magnitude stays bounded on long
# sequences with large emissions (float32 keeps ~7 significant digits).
_RECENTRE_EVERY = 16
# Upper bound (in elements) of the per-block ``transitions + emissions`` tensor of the max-plus
# scan; precomputing it saves one op per time step.
_MAX_PLUS_BLOCK_ELEMENTS = 1 << 22
# Segments scored at once by ``SpanPosteriors.probabilities``: a few (chunk, K) float64 blocks.
SEGMENT_CHUNK = 1 << 14


class CRFConstraints(NamedTuple):
    """Boolean masks of what is allowed: ``transitions (K, K)``, ``start (K,)``, ``end (K,)``."""

    transitions: Tensor
    start: Tensor
    end: Tensor


def as_constraints(value, num_tags: int, device=None) -> CRFConstraints | None:
    """Turn a ``(transitions, start, end)`` triple of array-likes into checked bool tensors."""
    if value is None:
        return None
    if len(value) != 3:
        raise ValueError("constraints must be a (transitions, start, end) triple of boolean masks")
    trans, start, end = (torch.as_tensor(v, dtype=torch.bool, device=device) for v in value)
    if (
        trans.shape != (num_tags, num_tags)
        or start.shape != (num_tags,)
        or end.shape != (num_tags,)
    ):
        raise ValueError(
            f"constraint masks must have shapes ({num_tags}, {num_tags}), ({num_tags},), "
            f"({num_tags},); got {tuple(trans.shape)}, {tuple(start.shape)}, {tuple(end.shape)}"
        )
    return CRFConstraints(trans, start, end)


# --------------------------------------------------------------------------------------------
# Input preparation


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_inputs(emissions: Tensor, mask: Tensor | None) -> Tensor:
    if emissions.dim() != 3:
        raise ValueError(
            f"emissions must be (batch, time, tags); got shape {tuple(emissions.shape)}"
        )
    if not emissions.is_floating_point():
        raise TypeError(f"emissions must be a float tensor; got {emissions.dtype}")
    batch, length, _ = emissions.shape
    if mask is None:
        return torch.ones((batch, length), dtype=torch.bool, device=emissions.device)
    if mask.shape != (batch, length):
        raise ValueError(
            f"mask must have shape {(batch, length)} to match emissions; got {tuple(mask.shape)}"
        )
    mask = mask.to(device=emissions.device, dtype=torch.bool)
    # The check needs the values on the host, so it is only made where that is free.
    if mask.device.type == "cpu" and length > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        row = int((mask[:, 1:] & ~mask[:, :-1]).any(1).nonzero()[0])
        raise ValueError(f"mask row {row} is not left-aligned (a True follows a False)")
    return mask


def _parameters(
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    constraints: CRFConstraints | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """Cast the parameters and set the scores of forbidden moves to -inf."""
    num_tags = transitions.shape[-1]
    if (
        transitions.shape != (num_tags, num_tags)
        or start.shape != (num_tags,)
        or end.shape != (num_tags,)
    ):
        raise ValueError(
            "transitions must be (K, K) and start/end (K,); got "
            f"{tuple(transitions.shape)}, {tuple(start.shape)}, {tuple(end.shape)}"
        )
    params = [p.to(device=device, dtype=dtype) for p in (transitions, start, end)]
    if constraints is not None:
        params = [
            p.masked_fill(~allowed.to(device=device), float("-inf"))
            for p, allowed in zip(params, constraints, strict=True)
        ]
    return params[0], params[1], params[2]


def _prepare(emissions, mask, transitions, start, end, constraints):
    """Checked, cast inputs: emissions with padding zeroed, lengths and masked parameters."""
    mask = _check_inputs(emissions, mask)
    if emissions.shape[-1] != transitions.shape[-1]:
        raise ValueError(
            f"emissions have {emissions.shape[-1]} tags but the CRF has {transitions.shape[-1]}"
        )
    dtype = _compute_dtype(emissions.dtype)
    emissions = emissions.to(dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
    trans, start, end = _parameters(transitions, start, end, constraints, dtype, emissions.device)
    return emissions, mask, mask.sum(1), trans, start, end


def _last_index(lengths: Tensor) -> Tensor:
    return (lengths - 1).clamp(min=0)


def _reverse_index(lengths: Tensor, length: int) -> Tensor:
    """(B, T) time index that reverses each sequence's valid prefix and keeps its padding."""
    steps = torch.arange(length, device=lengths.device).unsqueeze(0)
    flipped = lengths.unsqueeze(1) - 1 - steps
    return torch.where(flipped >= 0, flipped, steps)


def _reverse(emissions: Tensor, lengths: Tensor) -> Tensor:
    index = _reverse_index(lengths, emissions.shape[1])
    return emissions.gather(1, index.unsqueeze(-1).expand_as(emissions))


# --------------------------------------------------------------------------------------------
# Sum-product scan


def _needs_log_space(emissions: Tensor, mask: Tensor, trans: Tensor) -> bool:
    """Whether the exp-matmul step could lose probability mass to underflow.

    The fast step multiplies normalised probabilities by ``exp(trans)``; a tag whose weight
    falls more than ~80 nats (float32) below the best one is flushed to zero, which is only
    harmless while emissions and transitions span a moderate range. Trained networks stay far
    inside it; extreme inputs (e.g. emissions of +-1e4 under constraints) take the exact
    log-space step instead. One host sync per call, outside the time loop.
    """
    finite = torch.isfinite(trans)
    if not bool(finite.any()):
        return False
    trans_range = trans[finite].amax() - trans[finite].amin()
    top = emissions.amax(-1)
    bottom = emissions.masked_fill(torch.isinf(emissions), float("inf")).amin(-1)
    spread = torch.where(mask & torch.isfinite(bottom), top - bottom, torch.zeros_like(top))
    limit = 300.0 if emissions.dtype == torch.float64 else 30.0
    return (
        bool(spread.amax() + trans_range > limit) if spread.numel() else bool(trans_range > limit)
    )


def _without_autocast(device: torch.device):
    """A region where autocast leaves the matmuls alone: under ``torch.autocast`` (bf16/fp16)
    the exp-matmul step would otherwise run in 8 mantissa bits and log Z drift with T. (The
    other ops the scans use run in float32 under autocast, or are float64.)"""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _sum_product_scan(
    emissions: Tensor, trans: Tensor, start: Tensor, log_space: bool
) -> tuple[Tensor, Tensor]:
    """Forward algorithm over every position, padding included (callers read what they need).

    Returns ``local (T, B, K)`` and ``log_norm (T, B)`` (float64) such that the forward vector
    is ``alpha[t] = local[t] - log_norm[t] + cumsum(log_norm)[t]``: the length-dependent part
    lives in a float64 running sum, the per-step part stays small. The fast step is
    ``log(softmax(local[t-1]) @ exp(trans)) + emission``, one matmul instead of a (B, K, K)
    logsumexp; ``log_space`` selects the exact logsumexp step (see ``_needs_log_space``).
    """
    if log_space:
        # Extreme inputs: float32 rounding of ~1e4-sized terms would random-walk over time.
        emissions, trans, start = emissions.double(), trans.double(), start.double()
    emissions = emissions.transpose(0, 1)  # time-major (T, B, K)
    local = torch.empty_like(emissions)
    torch.add(emissions[0], start, out=local[0])
    steps = local.unbind(0)
    if log_space:
        em = emissions.unbind(0)
        for t in range(1, len(steps)):
            log_probs = torch.log_softmax(steps[t - 1], -1).unsqueeze(-1)
            torch.add(torch.logsumexp(log_probs + trans, 1), em[t], out=steps[t])
    elif len(steps) > 1:
        # Shift each column of the transitions so its largest allowed entry is 0: exp() stays
        # in range and a column has at least one 1 unless all its moves are forbidden.
        shift = trans.amax(0)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        exp_trans = torch.exp(trans - shift)
        shifted = (emissions[1:] + shift).unbind(0)
        probs = torch.softmax(steps[0], -1)
        with _without_autocast(emissions.device):
            for t in range(1, len(steps)):
                torch.add(torch.log(probs @ exp_trans), shifted[t - 1], out=steps[t])
                probs = torch.softmax(steps[t], -1)
    log_norm = torch.logsumexp(local, -1).double()
    return local, log_norm


def _forward_quantities(emissions, lengths, trans, start, end, log_space):
    """Forward scan plus log Z in float64 (0 for empty sequences, -inf if none is allowed)."""
    local, log_norm = _sum_product_scan(emissions, trans, start, log_space)
    batch = torch.arange(emissions.shape[0], device=emissions.device)
    last = _last_index(lengths)
    before_last = (log_norm.cumsum(0) - log_norm)[last, batch]
    log_z = before_last + torch.logsumexp(local[last, batch] + end, -1).double()
    log_z = torch.where(lengths > 0, log_z, torch.zeros_like(log_z))
    # A sequence the constraints allow no path for normalises -inf rows: NaN, i.e. log Z = -inf.
    log_z = torch.nan_to_num(log_z, nan=float("-inf"))
    return local, log_norm, log_z


class _Posteriors(NamedTuple):
    unary: Tensor  # (T, B, K) marginals, 0 at padding
    log_fwd: Tensor  # (T, B, K) log of the normalised forward probabilities
    log_bwd: Tensor  # (T, B, K) same for the backward-from-end scan, in forward time order
    pair_offset: Tensor  # (T-1, B) float64: log weight of the pair (t-1, t), see below
    log_z: Tensor  # (B,) float64
    cum: Tensor  # (T, B) float64: log alpha[t] = log_fwd[t] + cum[t]
    rev_cum: Tensor  # (T, B) float64: log beta[t] + e[t] = log_bwd[t] + rev_cum[t]


def _posteriors(
    emissions, mask, lengths, trans, start, end, log_space, forward=None
) -> _Posteriors:
    """Forward-backward: unary marginals plus what the pairwise marginals are built from.

    ``forward``: the ``_forward_quantities`` of these inputs if already computed.
    """
    if forward is None:
        forward = _forward_quantities(emissions, lengths, trans, start, end, log_space)
    local, log_norm, log_z = forward
    # Backward vectors are the forward scan over each reversed sequence with the transposed
    # transitions, started by the end scores: beta[t] = alpha_rev[n-1-t] - e[t].
    rev_local, rev_norm = _sum_product_scan(_reverse(emissions, lengths), trans.t(), end, log_space)
    index = _reverse_index(lengths, emissions.shape[1]).t()  # (T, B)
    batch = torch.arange(emissions.shape[0], device=emissions.device).unsqueeze(0)
    cum, rev_cum = log_norm.cumsum(0), rev_norm.cumsum(0)[index, batch]
    rev_local, rev_norm = rev_local[index, batch], rev_norm[index, batch]
    possible = torch.isfinite(log_z)
    safe_log_z = torch.where(possible, log_z, torch.zeros_like(log_z))
    # The exponent cancels large terms (forward + backward ~ log Z): float64 keeps the digits.
    offset = cum - log_norm + rev_cum - rev_norm - safe_log_z
    em = emissions.transpose(0, 1)
    exponent = local.double() + rev_local.double() - em.double() + offset.unsqueeze(-1)
    unary = torch.exp(exponent).to(emissions.dtype)
    # A tag ruled out by an emission of -inf (partial labels) has marginal 0 (not -inf - -inf).
    keep = mask.t().unsqueeze(-1) & possible.view(1, -1, 1) & ~torch.isneginf(em)
    unary = torch.where(keep, unary, torch.zeros_like(unary))
    log_fwd = local - log_norm.unsqueeze(-1).to(local.dtype)
    log_bwd = rev_local - rev_norm.unsqueeze(-1).to(local.dtype)
    # p(y[t-1]=i, y[t]=j) = exp(log_fwd[t-1, i] + trans[i, j] + log_bwd[t, j] + pair_offset[t-1])
    pair_offset = cum[:-1] + rev_cum[1:] - safe_log_z
    return _Posteriors(unary, log_fwd, log_bwd, pair_offset, log_z, cum, rev_cum)


def _transition_marginals(
    post: _Posteriors, mask: Tensor, trans: Tensor, weight: Tensor, log_space
):
    """Pairwise marginals summed over batch and time, each sequence weighted: (K, K)."""
    if post.log_fwd.shape[0] < 2:
        return torch.zeros_like(trans)
    valid = mask[:, 1:].t() & torch.isfinite(post.log_z).unsqueeze(0)
    if log_space:
        # Exact but (N, K, K): only taken for extreme inputs.
        terms = (
            post.log_fwd[:-1].unsqueeze(-1)
            + trans
            + post.log_bwd[1:].unsqueeze(-2)
            + post.pair_offset.view(*post.pair_offset.shape, 1, 1)
        )
        terms = torch.exp(terms) * weight.to(terms.dtype).view(1, -1, 1, 1)
        terms = torch.where(valid.view(*valid.shape, 1, 1), terms, 0.0)
        return terms.sum((0, 1)).to(trans.dtype)
    # Fast path, one matmul over all (t, b): the float64 row weights cannot overflow.
    shift = trans.amax()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    rows = torch.exp(post.pair_offset + shift.double()) * weight.double()
    rows = torch.where(valid, rows, torch.zeros_like(rows))
    fwd = torch.exp(post.log_fwd[:-1]).double()
    bwd = torch.exp(post.log_bwd[1:]).double() * rows.unsqueeze(-1)
    num_tags = trans.shape[-1]
    pairs = fwd.reshape(-1, num_tags).t() @ bwd.reshape(-1, num_tags)
    return (torch.exp((trans - shift).double()) * pairs).to(trans.dtype)


class _LogPartition(torch.autograd.Function):
    """log Z (float64) with the marginals as its gradient: no autograd graph per time step."""

    @staticmethod
    def forward(ctx, emissions, mask, trans, start, end, parallel: bool):
        lengths = mask.sum(1)
        if parallel:  # exact log-space products: no host sync to choose a step
            log_space = True
            forward = _parallel_forward(emissions, lengths, trans, start, end)
        else:
            log_space = _needs_log_space(emissions, mask, trans)
            forward = _forward_quantities(emissions, lengths, trans, start, end, log_space)
        # The backward pass reuses the forward scan (a third of the work) instead of redoing it.
        ctx.save_for_backward(emissions, mask, trans, start, end, *forward)
        ctx.log_space, ctx.parallel = log_space, parallel
        return forward[2]

    @staticmethod
    def backward(ctx, grad_log_z):
        emissions, mask, trans, start, end, *forward = ctx.saved_tensors
        lengths = mask.sum(1)
        if ctx.parallel:
            post = _parallel_posteriors(emissions, mask, lengths, trans, start, end, forward)
        else:
            post = _posteriors(
                emissions, mask, lengths, trans, start, end, ctx.log_space, tuple(forward)
            )
        # Sequences whose log Z is -inf (no allowed path) have no defined gradient: zero.
        grad = torch.where(torch.isfinite(post.log_z), grad_log_z, torch.zeros_like(grad_log_z))
        unary = post.unary * grad.to(emissions.dtype).view(1, -1, 1)  # (T, B, K)
        batch = torch.arange(emissions.shape[0], device=emissions.device)
        grad_start = unary[0].sum(0)
        grad_end = unary[_last_index(lengths), batch].sum(0)
        grad_trans = _transition_marginals(post, mask, trans, grad, ctx.log_space)
        return unary.transpose(0, 1), None, grad_trans, grad_start, grad_end, None


# --------------------------------------------------------------------------------------------
# Max-plus scan (Viterbi and n-best)


def _max_plus_scan(emissions, lengths, trans, start, end, k: int) -> tuple[Tensor, Tensor]:
    """The k best paths of every sequence: ``(paths (B, k, T) with -1 padding, scores (B, k))``.

    Ranks that do not exist (fewer than k allowed paths) get score -inf and path -1.
    """
    batch, length, num_tags = emissions.shape
    device = emissions.device
    if length == 0:
        return (
            torch.empty((batch, k, 0), dtype=torch.long, device=device),
            torch.zeros((batch, k), dtype=emissions.dtype, device=device),
        )
    em = emissions.transpose(0, 1)  # (T, B, K)
    neg_inf = float("-inf")
    # best[t, b, j, r]: r-th best score of a prefix ending in tag j at t (re-centred).
    best = em.new_full((length, batch, num_tags, k), neg_inf)
    best[0, :, :, 0] = em[0] + start
    # pointer[t, b, r, j] = i * k + r' : the r-th best at (t, j) extends (t-1, i, rank r').
    pointer = torch.empty((length, batch, k, num_tags), dtype=torch.long, device=device)
    centre = em.new_zeros((length, batch), dtype=torch.float64)
    best_steps = best.unbind(0)
    pointer_steps = pointer.unbind(0)
    block = max(1, _MAX_PLUS_BLOCK_ELEMENTS // max(1, batch * num_tags * num_tags))
    for begin in range(1, length, block):
        stop = min(length, begin + block)
        # scores[t][b, i, j] = trans[i, j] + e[t, b, j], for a block of time steps at once.
        scores = (trans + em[begin:stop].unsqueeze(2)).unbind(0)
        for t in range(begin, stop):
            prev = best_steps[t - 1]
            if k == 1:
                torch.max(
                    prev + scores[t - begin], 1, out=(best_steps[t][..., 0], pointer_steps[t][:, 0])
                )
            else:
                cand = (prev.unsqueeze(-1) + scores[t - begin].unsqueeze(2)).reshape(
                    batch, num_tags * k, num_tags
                )
                values, idx = cand.topk(k, dim=1)  # (B, k, K), sorted best first
                best_steps[t].copy_(values.transpose(1, 2))
                pointer_steps[t].copy_(idx)
            if t % _RECENTRE_EVERY == 0:
                top = best_steps[t].amax((1, 2))
                top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
                best_steps[t].sub_(top[:, None, None])
                centre[t] = top
    batch_index = torch.arange(batch, device=device)
    last = _last_index(lengths)
    final = (best[last, batch_index] + end.unsqueeze(-1)).reshape(batch, num_tags * k)
    scores, ends = final.topk(k, dim=1)  # ends = j * k + r
    scores = scores.double() + centre.cumsum(0)[last, batch_index].unsqueeze(1)
    # Padding steps point to themselves, so backtracking can start at the last column for all.
    steps = torch.arange(length, device=device).unsqueeze(1)
    identity = (torch.arange(num_tags, device=device) * k).unsqueeze(0) + torch.arange(
        k, device=device
    ).unsqueeze(1)  # (k, K): j * k + r
    padding = (steps >= lengths.unsqueeze(0)).view(length, batch, 1, 1)
    pointer = torch.where(padding, identity, pointer)
    pointer_steps = pointer.view(length, batch, k * num_tags).unbind(0)
    # state[t, b, p] = j * k + r for path p; pointer flattened as r * K + j.
    state = torch.empty((length, batch, k), dtype=torch.long, device=device)
    state[length - 1] = ends
    state_steps = state.unbind(0)
    if k == 1:  # state == tag: one gather per step
        for t in range(length - 1, 0, -1):
            torch.gather(pointer_steps[t], 1, state_steps[t], out=state_steps[t - 1])
    else:
        for t in range(length - 1, 0, -1):
            cur = state_steps[t]
            flat = (cur % k) * num_tags + cur // k
            torch.gather(pointer_steps[t], 1, flat, out=state_steps[t - 1])
    paths = (state // k).permute(1, 2, 0)  # (B, k, T)
    valid = (steps.t() < lengths.unsqueeze(1)).unsqueeze(1) & torch.isfinite(scores).unsqueeze(-1)
    paths = torch.where(valid, paths, torch.full_like(paths, -1))
    scores = torch.where(lengths.unsqueeze(1) > 0, scores, torch.zeros_like(scores))
    if k > 1:  # an empty sequence has one (empty) path, not k
        rank = torch.arange(k, device=device).unsqueeze(0)
        scores = torch.where((lengths.unsqueeze(1) > 0) | (rank == 0), scores, neg_inf)
    return paths, scores.to(emissions.dtype)


# --------------------------------------------------------------------------------------------
# Parallel scan (algorithm="parallel")
#
# The chain is a product of K x K step matrices in a semiring: element 0 is the start matrix
# (every row is ``start + e[0]``), element t >= 1 is ``trans + e[t]`` (row = previous tag,
# column = this tag). In the suffix (backward) scan a padding step is the semiring identity (0
# on the diagonal, -inf off it), so every sequence of a ragged batch is a product over the same
# padded length; the prefix (forward) scan reads each sequence at its last position. Prefix
# products are taken by a recursive odd/even scan (Ladner-Fischer; torch-struct's ``_dp_scan``
# takes the same tree): 2 log2(T) levels of batched semiring matrix products, whatever T.
# Every element is kept as ``(matrix - max, max)``: a float32 matrix whose largest entry is 0
# and a float64 offset, so the float32 arithmetic only ever sees numbers of order 1 and the
# quantities that grow with the length (~T * |e|) are summed in float64, as in the sequential
# scans. Memory: a level holds a few (B, T/2, K, K, K) float32 temporaries (0.6 GB each at
# B = 32, T = 2,048, K = 17) besides the O(B T K^2) prefix products; beyond some 100 tags, or
# B * T in the millions, the sequential algorithm (O(B K^2) per step) is the one to use.


def _log_matmul(left: Tensor, right: Tensor) -> Tensor:
    """Log-semiring product of ``(..., K, K)`` stacks: logsumexp over the inner index."""
    return torch.logsumexp(left.unsqueeze(-1) + right.unsqueeze(-3), -2)


def _max_matmul(left: Tensor, right: Tensor) -> Tensor:
    """Max-plus product of ``(..., K, K)`` stacks."""
    return (left.unsqueeze(-1) + right.unsqueeze(-3)).amax(-2)


def _normalised(raw: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """``(raw - max, offset + max)`` per matrix; an all -inf matrix keeps offset and -inf."""
    top = raw.amax((-2, -1))
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return raw - top[..., None, None], offset + top.double()


def _matrix_combine(matmul):
    def combine(left: tuple[Tensor, ...], right: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return _normalised(matmul(left[0], right[0]), left[1] + right[1])

    return combine


def _compose_maps(left: tuple[Tensor, ...], right: tuple[Tensor, ...]) -> tuple[Tensor]:
    """``right`` after ``left`` for (..., K) index maps (map[x] = image of x)."""
    return (right[0].gather(-1, left[0]),)


def _scan(elements: tuple[Tensor, ...], combine) -> tuple[Tensor, ...]:
    """Inclusive prefix scan along dim 1 (a power of two long) of an associative ``combine``.

    ``elements`` is a tuple of tensors ``(B, N, ...)`` that together form one element per
    (b, n); ``combine(left, right)`` takes two such tuples of equal shapes (left earlier).
    Depth 2 log2(N) combines, work ~2N, the recursion unrolled on the host from shapes only.
    """
    length = elements[0].shape[1]
    if length == 1:
        return elements
    pairs = combine(tuple(x[:, 0::2] for x in elements), tuple(x[:, 1::2] for x in elements))
    odd = _scan(pairs, combine)  # prefixes ending at 1, 3, 5, ...
    if length == 2:
        even = tuple(x[:, :1] for x in elements)
    else:
        rest = combine(tuple(x[:, :-1] for x in odd), tuple(x[:, 2::2] for x in elements))
        even = tuple(
            torch.cat([x[:, :1], r], 1) for x, r in zip(elements, rest, strict=True)
        )  # prefixes ending at 0, 2, 4, ...
    return tuple(torch.stack([e, o], 2).flatten(1, 2) for e, o in zip(even, odd, strict=True))


def _pad_pow2(elements: tuple[Tensor, ...], fills: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Append identity elements ``fills`` (broadcast to one step) up to a power of two."""
    length = elements[0].shape[1]
    padded = 1 << max(0, (length - 1).bit_length())
    if padded == length:
        return elements
    return tuple(
        torch.cat([x, fill.expand(x.shape[0], padded - length, *x.shape[2:])], 1)
        for x, fill in zip(elements, fills, strict=True)
    )


def _log_identity(num_tags: int, like: Tensor) -> Tensor:
    eye = torch.eye(num_tags, dtype=torch.bool, device=like.device)
    return torch.zeros((), dtype=like.dtype, device=like.device).masked_fill(~eye, float("-inf"))


def _step_matrices(emissions: Tensor, trans: Tensor, start: Tensor) -> Tensor:
    """``(B, T, K, K)`` float64: the start matrix, then ``trans + e[t]``. Padding needs no
    identity here: a prefix product never reaches past its own position, and each sequence's
    result is read at its last position."""
    batch, _, num_tags = emissions.shape
    emissions, trans, start = emissions.double(), trans.double(), start.double()
    first = (start + emissions[:, :1]).unsqueeze(-2).expand(batch, 1, num_tags, num_tags)
    return torch.cat([first, trans + emissions[:, 1:].unsqueeze(-2)], 1)


def _chain_scan(mats: Tensor, matmul, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Normalised inclusive prefix products of ``mats (B, N, K, K)`` (float64): ``(B, N, K, K)``
    matrices of ``dtype`` with max 0 and ``(B, N)`` float64 offsets."""
    length = mats.shape[1]
    # Normalised in float64: ``trans + e`` of ~1e4-sized emissions loses its last digits in
    # float32, and such an error would add up along the chain.
    zero = mats.new_zeros(mats.shape[:2], dtype=torch.float64)
    raw, offsets = _normalised(mats.double(), zero)
    elements = (raw.to(dtype), offsets)
    identity = _log_identity(mats.shape[-1], elements[0])
    elements = _pad_pow2(elements, (identity, elements[1].new_zeros(())))
    prods, offsets = _scan(elements, _matrix_combine(matmul))
    return prods[:, :length], offsets[:, :length]


def _parallel_forward(emissions, lengths, trans, start, end, matmul=_log_matmul):
    """Forward vectors by a prefix scan: ``(fwd (T, B, K) with max 0, cum (T, B) float64)``
    such that alpha[t] = fwd[t] + cum[t], plus log Z (B,) float64 (max-plus: best score)."""
    prods, offsets = _chain_scan(_step_matrices(emissions, trans, start), matmul, emissions.dtype)
    return _forward_vectors(prods, offsets, lengths, end, matmul)


def _forward_vectors(prods, offsets, lengths, end, matmul):
    fwd, cum = prods[:, :, 0].transpose(0, 1), offsets.t()  # every row of a prefix is alpha
    batch = torch.arange(prods.shape[0], device=prods.device)
    last = _last_index(lengths)
    final = fwd[last, batch] + end
    total = final.logsumexp(-1) if matmul is _log_matmul else final.amax(-1)
    log_z = cum[last, batch] + total.double()
    log_z = torch.where(lengths > 0, log_z, torch.zeros_like(log_z))
    return fwd, cum, log_z


def _backward_matrices(emissions, lengths, trans, end) -> Tensor:
    """``(B, T, K, K)`` float64 whose prefix products give the backward vectors.

    The suffix products of ``trans + e[1]``, ..., ``trans + e[T-1]``, then an end matrix whose
    every column is ``end`` (identity past each length), are the prefix products of the
    reversed, transposed sequence.
    """
    batch, length, num_tags = emissions.shape
    trans = trans.double()
    last = end.double().unsqueeze(-1).expand(batch, 1, num_tags, num_tags)
    steps = trans + emissions[:, 1:].double().unsqueeze(-2)
    mats = torch.cat([steps, last], 1)  # element t: step t+1, float64
    steps = torch.arange(length, device=emissions.device)
    padding = (steps + 1 >= lengths.unsqueeze(1)) & (steps + 1 < length)
    mats = torch.where(padding[..., None, None], _log_identity(num_tags, mats), mats)
    return mats.flip(1).transpose(-1, -2)


def _backward_vectors(prods: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
    return prods[:, :, 0].flip(1).transpose(0, 1), offsets.flip(1).t()


def _parallel_backward(emissions, lengths, trans, end) -> tuple[Tensor, Tensor]:
    """Backward vectors (emission at t excluded) by a suffix scan: ``(bwd (T, B, K) with max
    0, offset (T, B) float64)``, beta[t] = bwd[t] + offset[t]."""
    mats = _backward_matrices(emissions, lengths, trans, end)
    return _backward_vectors(*_chain_scan(mats, _log_matmul, emissions.dtype))


def _parallel_forward_backward(emissions, lengths, trans, start, end):
    """``_parallel_forward`` and ``_parallel_backward`` as one scan over a 2B batch: the same
    number of kernel launches as one of them."""
    batch = emissions.shape[0]
    mats = torch.cat(
        [
            _step_matrices(emissions, trans, start),
            _backward_matrices(emissions, lengths, trans, end),
        ]
    )
    prods, offsets = _chain_scan(mats, _log_matmul, emissions.dtype)
    forward = _forward_vectors(prods[:batch], offsets[:batch], lengths, end, _log_matmul)
    return forward, _backward_vectors(prods[batch:], offsets[batch:])


def _parallel_posteriors(emissions, mask, lengths, trans, start, end, forward=None):
    """``_posteriors`` by the parallel scans. ``forward``: ``_parallel_forward``'s result."""
    if forward is None:
        forward, backward = _parallel_forward_backward(emissions, lengths, trans, start, end)
    else:
        backward = _parallel_backward(emissions, lengths, trans, end)
    fwd, cum, log_z = forward
    bwd, bwd_offset = backward
    possible = torch.isfinite(log_z)
    safe_log_z = torch.where(possible, log_z, torch.zeros_like(log_z))
    em = emissions.transpose(0, 1)
    exponent = fwd.double() + bwd.double() + (cum + bwd_offset - safe_log_z).unsqueeze(-1)
    unary = torch.exp(exponent)
    # Exactly, every position's marginals sum to 1. With extreme inputs (emissions ~1e4 apart)
    # the float32 products carry an error of order 1e-3 nats per level, mostly shared by
    # all tags of a position: dividing by the sum removes that shared part.
    unary = (unary / unary.sum(-1, keepdim=True)).to(emissions.dtype)
    keep = mask.t().unsqueeze(-1) & possible.view(1, -1, 1)
    unary = torch.where(keep, unary, torch.zeros_like(unary))
    # log beta[t] + e[t], normalised as the sequential scans store it.
    bwd_emit, rev_cum = _normalised((bwd.double() + em.double()).unsqueeze(-1), bwd_offset)
    log_bwd = bwd_emit.squeeze(-1).to(emissions.dtype)
    pair_offset = cum[:-1] + rev_cum[1:] - safe_log_z
    return _Posteriors(unary, fwd, log_bwd, pair_offset, log_z, cum, rev_cum)


def _parallel_viterbi(emissions, lengths, trans, start, end) -> tuple[Tensor, Tensor]:
    """Best paths ``(B, T)`` (-1 padding) and scores ``(B,)`` with no per-step backtrack.

    A max-plus prefix scan gives the Viterbi forward vectors; the backpointers of all steps
    are one argmax; following them from the best last tag is a suffix scan of the composed
    index maps (pointer jumping, O(log T) gathers), so the result is the path the sequential
    backtrack would follow from the same scores: always an allowed path with the best score.
    """
    batch, length, num_tags = emissions.shape
    device = emissions.device
    if length == 0:
        return (
            torch.empty((batch, 0), dtype=torch.long, device=device),
            torch.zeros(batch, dtype=emissions.dtype, device=device),
        )
    fwd, cum, _ = _parallel_forward(emissions, lengths, trans, start, end, _max_matmul)
    batch_index = torch.arange(batch, device=device)
    last = _last_index(lengths)
    final_scores, final_tag = (fwd[last, batch_index] + end).max(-1)
    scores = cum[last, batch_index] + final_scores.double()
    tags = torch.arange(num_tags, device=device)
    # maps[b, t][j]: the tag at t on the best path to tag j at t+1; identity past the length.
    pointers = (fwd[:-1].unsqueeze(-1) + trans).argmax(-2).transpose(0, 1)  # (B, T-1, K)
    steps = torch.arange(1, length, device=device)
    padding = (steps >= lengths.unsqueeze(1)).unsqueeze(-1)
    pointers = torch.where(padding, tags, pointers)
    maps = torch.cat([pointers, tags.expand(batch, 1, num_tags)], 1).flip(1)
    (composed,) = _scan(_pad_pow2((maps,), (tags,)), _compose_maps)
    composed = composed[:, :length].flip(1)  # composed[b, t][j]: tag at t if tag j at T-1
    paths = composed.gather(-1, final_tag.view(batch, 1, 1).expand(batch, length, 1))[..., 0]
    valid = torch.arange(length, device=device) < lengths.unsqueeze(1)
    paths = torch.where(valid & torch.isfinite(scores).unsqueeze(1), paths, -1)
    scores = torch.where(lengths > 0, scores, torch.zeros_like(scores))
    return paths, scores.to(emissions.dtype)


# --------------------------------------------------------------------------------------------
# Public functional API


def choose_algorithm(algorithm: str, emissions: Tensor) -> str:
    """``"sequential"`` or ``"parallel"`` for ``algorithm`` and these emissions ``(B, T, K)``.

    ``"auto"`` decides from the device and the shape alone (no host sync): the parallel scan
    on CUDA from ``AUTO_PARALLEL_MIN_LENGTH`` steps on, where the per-step kernel launches of
    the sequential scans dominate; the sequential scans everywhere else (on CPU they are
    faster at every length: the parallel scan does O(K) times more arithmetic).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {algorithm!r}")
    if algorithm != "auto":
        return algorithm
    if emissions.device.type == "cuda" and emissions.shape[1] >= AUTO_PARALLEL_MIN_LENGTH:
        return "parallel"
    return "sequential"


def log_partition(
    emissions, mask, transitions, start, end, constraints=None, *, algorithm: str = "auto"
) -> Tensor:
    """log Z per sequence, ``(B,)`` (float32 or float64).

    ``algorithm``: ``"sequential"`` (forward algorithm, one step per position),
    ``"parallel"`` (prefix scan, O(log T) depth) or ``"auto"`` (see ``choose_algorithm``).
    """
    prepared = _prepare(emissions, mask, transitions, start, end, constraints)
    return _log_partition(*prepared, algorithm=algorithm).to(prepared[0].dtype)


def _log_partition(emissions, mask, lengths, trans, start, end, algorithm="auto") -> Tensor:
    parallel = choose_algorithm(algorithm, emissions) == "parallel"
    if emissions.shape[1] == 0:  # only empty sequences: log Z = 0, still part of the graph
        return emissions.sum((1, 2)).double() * 0.0
    return _LogPartition.apply(emissions, mask, trans, start, end, parallel)


def gold_score(emissions, tags, mask, transitions, start, end, constraints=None) -> Tensor:
    """Score of the given tag paths, ``(B,)``; -inf where a path breaks a constraint."""
    prepared = _prepare(emissions, mask, transitions, start, end, constraints)
    return _gold_score(tags, *prepared).to(prepared[0].dtype)


def _gold_score(tags, emissions, mask, lengths, trans, start, end) -> Tensor:
    """Gathers only (no loop over time); summed in float64."""
    tags = _check_tags(tags, mask, emissions.shape[-1])
    safe = tags.masked_fill(~mask, 0)
    batch = torch.arange(emissions.shape[0], device=emissions.device)
    total = emissions.gather(2, safe.unsqueeze(-1)).squeeze(-1).double().sum(1)
    if emissions.shape[1] > 1:
        moves = trans[safe[:, :-1], safe[:, 1:]].masked_fill(~mask[:, 1:], 0.0)
        total = total + moves.double().sum(1)
    ends = start[safe[:, 0]].double() + end[safe[batch, _last_index(lengths)]].double()
    return total + torch.where(lengths > 0, ends, torch.zeros_like(ends))


def _check_tags(tags: Tensor, mask: Tensor, num_tags: int) -> Tensor:
    if tags.shape != mask.shape:
        raise ValueError(f"tags must have shape {tuple(mask.shape)}; got {tuple(tags.shape)}")
    tags = tags.to(device=mask.device, dtype=torch.long)
    if tags.device.type == "cpu":
        bad = mask & ((tags < 0) | (tags >= num_tags))
        if bool(bad.any()):
            row, col = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"tag {int(tags[row, col])} at sequence {row}, position {col} is outside "
                f"0..{num_tags - 1}"
            )
    return tags


def nll(
    emissions: Tensor,
    mask: Tensor | None,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    *,
    tags: Tensor | None = None,
    allowed: Tensor | None = None,
    constraints: CRFConstraints | None = None,
    reduction: str = "sum",
    algorithm: str = "auto",
    cost: Tensor | None = None,
) -> Tensor:
    """Negative log-likelihood of gold ``tags`` or of partial labels ``allowed (B, T, K)``.

    With ``allowed``, the loss is log Z minus log Z restricted to the allowed tags: a position
    with a single allowed tag is fully labelled, one with every tag allowed is unlabelled.
    ``algorithm`` as in ``log_partition``.

    ``cost (B, T, K)``, per position and tag, makes it the softmax-margin loss (Gimpel &
    Smith 2010): ``log sum_y exp(score(y) + cost(y)) - score(gold)``, where a path's cost is
    the sum of its tags' costs. The gold tags must cost 0 (and so must every allowed tag of a
    partially labelled position); the model then learns a margin of ``cost`` against the
    costly mistakes. Decoding is not changed by it.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if (tags is None) == (allowed is None):
        raise ValueError("give exactly one of tags= (gold path) or allowed= (partial labels)")
    if cost is not None:
        if cost.shape != emissions.shape:
            raise ValueError(
                f"cost must have the emissions' shape {tuple(emissions.shape)}; "
                f"got {tuple(cost.shape)}"
            )
        # With the gold tags at cost 0, adding the cost to both terms leaves the gold one as
        # it was: only the partition function is augmented.
        emissions = emissions + cost.to(device=emissions.device, dtype=emissions.dtype)
    prepared = _prepare(emissions, mask, transitions, start, end, constraints)
    emissions, mask = prepared[0], prepared[1]
    log_z = _log_partition(*prepared, algorithm=algorithm)
    if tags is not None:
        gold = _gold_score(tags, *prepared)
    else:
        if allowed.shape != emissions.shape:
            raise ValueError(
                f"allowed must have the emissions' shape {tuple(emissions.shape)}; "
                f"got {tuple(allowed.shape)}"
            )
        allowed = allowed.to(device=emissions.device, dtype=torch.bool)
        if allowed.device.type == "cpu":
            empty = mask & ~allowed.any(-1)
            if bool(empty.any()):
                row, col = (int(v) for v in empty.nonzero()[0])
                raise ValueError(f"no tag is allowed at sequence {row}, position {col}")
        restricted = emissions.masked_fill(~allowed & mask.unsqueeze(-1), float("-inf"))
        gold = _log_partition(restricted, *prepared[1:], algorithm=algorithm)
    # Both terms grow with the length; their difference is taken in float64.
    return reduce_losses((log_z - gold).to(emissions.dtype), mask, reduction)


def reduce_losses(losses: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """Per-sequence losses -> one of ``REDUCTIONS`` (``token_mean``: over unmasked tokens)."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses.sum() / mask.sum().clamp(min=1)


def viterbi(
    emissions, mask, transitions, start, end, constraints=None, *, algorithm: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Best path per sequence: ``(paths (B, T) padded with -1, scores (B,))``.

    ``algorithm``: ``"sequential"`` (max-plus scan and a per-step backtrack), ``"parallel"``
    (max-plus prefix scan and pointer jumping, O(log T) depth) or ``"auto"``.
    """
    emissions, _, lengths, trans, start, end = _prepare(
        emissions, mask, transitions, start, end, constraints
    )
    with torch.no_grad():
        if choose_algorithm(algorithm, emissions) == "parallel":
            return _parallel_viterbi(emissions, lengths, trans, start, end)
        paths, scores = _max_plus_scan(emissions, lengths, trans, start, end, 1)
    return paths[:, 0], scores[:, 0]


def nbest(emissions, mask, transitions, start, end, k: int, constraints=None):
    """The ``k`` best paths in order: ``(paths (B, k, T), scores (B, k))``.

    Ranks beyond the number of allowed paths have score -inf and path -1. Always sequential:
    a parallel k-best scan would carry (K k) x (K k) matrices, k^3 times the work of Viterbi's,
    for a call made on a few documents at a time.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    emissions, _, lengths, trans, start, end = _prepare(
        emissions, mask, transitions, start, end, constraints
    )
    with torch.no_grad():
        return _max_plus_scan(emissions, lengths, trans, start, end, k)


def marginals(
    emissions, mask, transitions, start, end, constraints=None, *, algorithm: str = "auto"
) -> Tensor:
    """Posterior tag probabilities ``(B, T, K)`` by forward-backward (0 at padding).

    ``algorithm`` as in ``log_partition``.
    """
    emissions, mask, lengths, trans, start, end = _prepare(
        emissions, mask, transitions, start, end, constraints
    )
    parallel = choose_algorithm(algorithm, emissions) == "parallel"
    if emissions.shape[1] == 0:
        return torch.zeros_like(emissions)
    with torch.no_grad():
        if parallel:
            post = _parallel_posteriors(emissions, mask, lengths, trans, start, end)
            return post.unary.transpose(0, 1)
        log_space = _needs_log_space(emissions, mask, trans)
        unary = _posteriors(emissions, mask, lengths, trans, start, end, log_space).unary
    return unary.transpose(0, 1)


def segment_probabilities(
    emissions: Tensor,
    mask: Tensor | None,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    batch_index: Tensor,
    begin: Tensor,
    tags: Tensor,
    *,
    not_before: Tensor | None = None,
    not_after: Tensor | None = None,
    constraints: CRFConstraints | None = None,
    algorithm: str = "auto",
) -> Tensor:
    """Exact posterior probability of labelled segments, ``(N,)``.

    Segment ``n`` is the tag sequence ``tags[n]`` (``(N, L)``, padded with -1) at positions
    ``begin[n]...`` of sequence ``batch_index[n]``, with everything outside it unconstrained
    except that the tag just before it is not one of ``not_before[n]`` and the tag just after
    it is not one of ``not_after[n]`` (``(N, K)`` or ``(K,)`` bool). That is how "exactly this
    entity" is said in schemes whose tags do not close an entity themselves (e.g. BIO: the
    next tag is not I-X). Computed from the forward and backward vectors, not from token
    marginals; see ``SpanPosteriors`` to score several sets of segments of one batch.
    ``algorithm`` as in ``log_partition``.
    """
    if batch_index.shape[0] == 0:
        dtype = _compute_dtype(emissions.dtype)
        return emissions.new_zeros((0,), dtype=dtype)
    posteriors = SpanPosteriors(
        emissions, mask, transitions, start, end, constraints, algorithm=algorithm
    )
    return posteriors.probabilities(
        batch_index, begin, tags, not_before=not_before, not_after=not_after
    )


class SpanPosteriors:
    """The forward and backward vectors of one batch, from which the exact posterior of any
    labelled segment is read.

    Forward-backward runs once, when the object is built (O(B T K^2)); ``probabilities`` then
    costs O(N (L + K)) for N segments of at most L tags and works through them in chunks of
    ``SEGMENT_CHUNK``, so the memory it needs is bounded whatever N is: all candidate spans
    of a 100,000-token document can be scored without a (tokens x span length x tags) block.
    ``log_z`` (float64) is the same batch's log partition, e.g. for best-path probabilities.
    ``algorithm`` chooses the forward-backward scans as in ``log_partition``.
    """

    def __init__(
        self,
        emissions: Tensor,
        mask: Tensor | None,
        transitions: Tensor,
        start: Tensor,
        end: Tensor,
        constraints: CRFConstraints | None = None,
        *,
        algorithm: str = "auto",
    ) -> None:
        emissions, mask, lengths, trans, start_, end_ = _prepare(
            emissions, mask, transitions, start, end, constraints
        )
        parallel = choose_algorithm(algorithm, emissions) == "parallel"
        self.dtype = emissions.dtype
        self.lengths = lengths
        self._emissions = emissions
        self._trans, self._start, self._end = trans.double(), start_.double(), end_.double()
        if emissions.shape[1] == 0:  # only empty sequences: no segment, log Z = 0
            self.log_z = emissions.new_zeros(emissions.shape[0], dtype=torch.float64)
            self.marginals = torch.zeros_like(emissions)
            self._alpha = self._beta_emit = emissions.new_zeros((0, *emissions.shape[::2]))
            return
        with torch.no_grad():
            if parallel:
                post = _parallel_posteriors(emissions, mask, lengths, trans, start_, end_)
            else:
                log_space = _needs_log_space(emissions, mask, trans)
                post = _posteriors(emissions, mask, lengths, trans, start_, end_, log_space)
        self.log_z = post.log_z
        # (B, T, K) posterior tag probabilities, 0 at padding (what ``marginals`` returns).
        self.marginals = post.unary.transpose(0, 1)
        # Time-major (T, B, K) float64: alpha[t] (forward, emission at t included) and
        # beta[t] + e[t] (backward from the end, emission at t included). Written without
        # subtracting the emission, so a tag ruled out by e = -inf gives -inf, not NaN.
        self._alpha = post.log_fwd.double() + post.cum.unsqueeze(-1)
        self._beta_emit = post.log_bwd.double() + post.rev_cum.unsqueeze(-1)

    def probabilities(
        self,
        batch_index: Tensor,
        begin: Tensor,
        tags: Tensor,
        *,
        not_before: Tensor | None = None,
        not_after: Tensor | None = None,
    ) -> Tensor:
        """Posterior probability of each segment, ``(N,)``; arguments as in
        ``segment_probabilities`` (``tags`` may be an expanded view: it is only sliced)."""
        device = self._emissions.device
        count = batch_index.shape[0]
        out = torch.zeros(count, dtype=self.dtype, device=device)
        if count == 0 or self._alpha.shape[0] == 0:
            return out
        batch_index, begin = batch_index.to(device).long(), begin.to(device).long()
        tags = tags.to(device).long()
        per_segment = [m is not None and m.dim() == 2 for m in (not_before, not_after)]
        masks = [None if m is None else m.to(device) for m in (not_before, not_after)]
        for first in range(0, count, SEGMENT_CHUNK):
            part = slice(first, min(count, first + SEGMENT_CHUNK))
            before, after = (
                m[part] if m is not None and rows else m
                for m, rows in zip(masks, per_segment, strict=True)
            )
            out[part] = self._chunk(batch_index[part], begin[part], tags[part], before, after)
        return out

    def _chunk(self, batch_index, begin, tags, not_before, not_after) -> Tensor:
        alpha, beta_emit = self._alpha, self._beta_emit
        length = alpha.shape[0]
        device = alpha.device
        seg_len = (tags >= 0).sum(1)
        stop = begin + seg_len - 1  # last position of the segment
        # Inside the segment: emissions and transitions along the given tags (gathers only).
        offsets = torch.arange(tags.shape[1], device=device)
        positions = (begin.unsqueeze(1) + offsets).clamp(max=length - 1)
        inside = offsets.unsqueeze(0) < seg_len.unsqueeze(1)
        safe_tags = tags.clamp(min=0)
        emit = self._emissions[batch_index.unsqueeze(1), positions, safe_tags].double()
        score = torch.where(inside, emit, 0.0).sum(1)
        if tags.shape[1] > 1:
            moves = self._trans[safe_tags[:, :-1], safe_tags[:, 1:]]
            score = score + torch.where(inside[:, 1:], moves, 0.0).sum(1)
        first = safe_tags[:, 0]
        last = safe_tags.gather(1, (seg_len - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        # Left context: the start score, or a sum over the allowed previous tags.
        left = alpha[(begin - 1).clamp(min=0), batch_index] + self._trans[:, first].t()
        if not_before is not None:
            left = left.masked_fill(not_before, float("-inf"))
        left = torch.where(begin > 0, left.logsumexp(-1), self._start[first])
        # Right context: the end score, or a sum over the allowed next tags.
        seq_len = self.lengths[batch_index]
        nxt = (stop + 1).clamp(max=length - 1)
        right = self._trans[last] + beta_emit[nxt, batch_index]
        if not_after is not None:
            right = right.masked_fill(not_after, float("-inf"))
        right = torch.where(stop + 1 < seq_len, right.logsumexp(-1), self._end[last])
        log_z = self.log_z[batch_index]
        valid = (seg_len > 0) & (stop < seq_len) & (begin >= 0) & torch.isfinite(log_z)
        log_prob = left + score + right - torch.where(valid, log_z, 0.0)
        return torch.where(valid, torch.exp(log_prob), 0.0).to(self.dtype)


# --------------------------------------------------------------------------------------------
# Module


class LinearChainCRF(nn.Module):
    """A linear-chain CRF layer with learned transition, start and end scores.

    ``constraints`` is an optional ``(transitions (K, K), start (K,), end (K,))`` triple of
    boolean masks (e.g. from ``spacy_crf_ner.tags.TagScheme.allowed_transitions``); it is
    stored as buffers, so it is saved in the ``state_dict``.
    """

    def __init__(self, num_tags: int, constraints=None) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be at least 1; got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        checked = as_constraints(constraints, num_tags)
        ones = torch.ones(num_tags, dtype=torch.bool)
        # Always applied (all True when unconstrained), so a state_dict restores them exactly.
        allowed = CRFConstraints(ones.outer(ones), ones, ones) if checked is None else checked
        self.register_buffer("allowed_transitions", allowed.transitions.clone())
        self.register_buffer("allowed_start", allowed.start.clone())
        self.register_buffer("allowed_end", allowed.end.clone())

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    @property
    def constraints(self) -> CRFConstraints:
        return CRFConstraints(self.allowed_transitions, self.allowed_start, self.allowed_end)

    def _params(self):
        return self.transitions, self.start_transitions, self.end_transitions

    def forward(
        self, emissions, tags=None, mask=None, *, allowed=None, reduction="sum", algorithm="auto"
    ):
        """The negative log-likelihood (see ``nll``); pytorch-crf's forward is its negation."""
        return self.nll(
            emissions, tags, mask, allowed=allowed, reduction=reduction, algorithm=algorithm
        )

    def log_partition(
        self, emissions: Tensor, mask: Tensor | None = None, *, algorithm: str = "auto"
    ) -> Tensor:
        return log_partition(
            emissions, mask, *self._params(), self.constraints, algorithm=algorithm
        )

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        return gold_score(emissions, tags, mask, *self._params(), self.constraints)

    def nll(
        self, emissions, tags=None, mask=None, *, allowed=None, reduction="sum", algorithm="auto"
    ) -> Tensor:
        return nll(
            emissions,
            mask,
            *self._params(),
            tags=tags,
            allowed=allowed,
            constraints=self.constraints,
            reduction=reduction,
            algorithm=algorithm,
        )

    def decode(
        self, emissions: Tensor, mask: Tensor | None = None, *, algorithm: str = "auto"
    ) -> tuple[Tensor, Tensor]:
        return viterbi(emissions, mask, *self._params(), self.constraints, algorithm=algorithm)

    def nbest(self, emissions: Tensor, mask: Tensor | None = None, k: int = 5):
        return nbest(emissions, mask, *self._params(), k, self.constraints)

    def marginals(
        self, emissions: Tensor, mask: Tensor | None = None, *, algorithm: str = "auto"
    ) -> Tensor:
        return marginals(emissions, mask, *self._params(), self.constraints, algorithm=algorithm)
