"""The glue between Thinc and the CRF engine: one padded batch of CRF sequences.

The component's model outputs flat emissions, one ``(n_tokens, K)`` row per token of a
batch; the engine (``crf.py``) works on padded ``(B, T, K)`` tensors, one row per CRF
sequence (a doc, or a sentence). This module

* lays the sequences out (``Segments``) and gathers the padded batch from the flat
  emissions in one indexing op, viewing the Thinc arrays as torch tensors without copying;
* applies per-token allowed tags (e.g. no entity edge on a whitespace token) as -inf
  emissions, so that decoding finds the best *allowed* path and probabilities are
  normalised over the allowed paths only;
* runs the loss, Viterbi, n-best and the probabilities of one batch, and copies the results
  to the host once per batch.

The CRF parameters are the Thinc params of ``layers.CRFLayer``, read through ``crf_params``.
Torch is imported inside the functions, as in ``layers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy
from thinc.api import Model, torch2xp, xp2torch
from thinc.types import Floats2d

from .layers import CRF_PARAMS

if TYPE_CHECKING:
    import torch

    from .crf import CRFConstraints

Entity = tuple[int, int, int, str]
"""(row of the batch, start token, end token exclusive, label)."""


class Segments(NamedTuple):
    """Where each CRF sequence lies in the flattened emissions (one row per token)."""

    index: numpy.ndarray  # (B, T) int64 rows of the flat emissions; -1 is padding
    lengths: numpy.ndarray  # (B,) int64


def make_segments(starts: Sequence[int], lengths: Sequence[int]) -> Segments:
    """Padded row index of sequences that start at ``starts`` in the flat emissions."""
    starts_a = numpy.asarray(starts, dtype="int64").reshape(-1)
    lengths_a = numpy.asarray(lengths, dtype="int64").reshape(-1)
    width = int(lengths_a.max()) if len(lengths_a) else 0
    steps = numpy.arange(width, dtype="int64")[None, :]
    index = numpy.where(steps < lengths_a[:, None], starts_a[:, None] + steps, -1)
    return Segments(index, lengths_a)


def crf_params(crf: Model, requires_grad: bool = False) -> list[torch.Tensor]:
    """The CRF layer's ``transitions (K, K)``, ``start (K,)``, ``end (K,)`` as torch views."""
    return [xp2torch(crf.get_param(name), requires_grad=requires_grad) for name in CRF_PARAMS]


def crf_device(crf: Model) -> torch.device:
    """The torch device of the CRF params (where constraints must live)."""
    return xp2torch(crf.get_param("transitions")).device


def pad_emissions(
    flat: torch.Tensor, segments: Segments, allowed: numpy.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the (B, T, K) batch and its mask from the flat (N, K) emissions in one op.

    ``allowed`` (N, K) bool, optional: the tags each token may take; the others get an
    emission of -inf, which every algorithm of the engine treats as "no path through here".
    """
    import torch

    index = torch.as_tensor(segments.index, device=flat.device)
    mask = index >= 0
    if allowed is not None:
        forbidden = ~torch.as_tensor(allowed, dtype=torch.bool, device=flat.device)
        flat = flat.masked_fill(forbidden, float("-inf"))
    return flat[index.clamp(min=0)], mask


def torch_constraints(
    arrays: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray], device: torch.device
) -> CRFConstraints:
    """The scheme's allowed-move masks as bool tensors on ``device``."""
    from .crf import as_constraints

    constraints = as_constraints(arrays, len(arrays[1]), device=device)
    assert constraints is not None
    return constraints


def tempered(
    emissions: torch.Tensor, params: Sequence[torch.Tensor], temperature: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Emissions and CRF params divided by ``temperature``. A path's score is linear in them,
    so every path score is divided by it too: the ranking of paths (Viterbi, n-best) stays,
    the probabilities soften (T > 1) or sharpen (T < 1)."""
    if temperature == 1.0:
        return emissions, list(params)
    return emissions / temperature, [p / temperature for p in params]


# --------------------------------------------------------------------------------------------
# Training


class NonFiniteLoss(ValueError):
    """Some sequences have no path consistent with their gold tags and the constraints."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"infinite CRF loss for sequences {rows}")
        self.rows = rows


def crf_loss(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    gold: numpy.ndarray,
    constraints: CRFConstraints | None = None,
) -> tuple[float, Floats2d, dict[str, Any]]:
    """Summed CRF negative log-likelihood of one padded batch, in one CRF call.

    ``gold`` is (B, T) tag ids aligned with ``segments.index``; -1 marks a missing label (any
    tag allowed there). Returns the loss, its gradient w.r.t. the flat emissions (rows that no
    segment uses get 0) and the gradients of the CRF params, for ``crf.inc_grad``.
    """
    import torch

    from .crf import nll

    flat = xp2torch(flat_emissions, requires_grad=True)
    params = crf_params(crf, requires_grad=True)
    emissions, mask = pad_emissions(flat, segments)
    gold_t = torch.as_tensor(gold, device=flat.device)
    if bool((gold[segments.index >= 0] >= 0).all()):
        losses = nll(
            emissions,
            mask,
            *params,
            tags=gold_t.clamp(min=0),
            constraints=constraints,
            reduction="none",
        )
    else:
        n_tags = emissions.shape[-1]
        tag_ids = torch.arange(n_tags, device=flat.device)
        allowed = (gold_t.unsqueeze(-1) == tag_ids) | (gold_t < 0).unsqueeze(-1)
        losses = nll(
            emissions,
            mask,
            *params,
            allowed=allowed,
            constraints=constraints,
            reduction="none",
        )
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        raise NonFiniteLoss([int(i) for i in (~finite).nonzero().flatten()])
    loss = losses.sum()
    grads = torch.autograd.grad(loss, [flat, *params])
    d_flat = torch2xp(grads[0])
    param_grads = {name: torch2xp(g) for name, g in zip(CRF_PARAMS, grads[1:], strict=True)}
    return float(loss.detach()), d_flat, param_grads


# --------------------------------------------------------------------------------------------
# Prediction


class CandidateRequest(NamedTuple):
    """Which candidate spans to score: every span of up to ``max_length`` tokens and every
    label, kept when its probability is at least ``threshold``."""

    labels: Sequence[str]
    max_length: int
    threshold: float


class Decoded(NamedTuple):
    """What ``crf_decode_with_confidence`` returns, on the host."""

    paths: numpy.ndarray  # (B, T) tag ids, -1 at padding
    path_probs: numpy.ndarray | None  # (B,) probability of each row's best path
    entity_probs: numpy.ndarray | None  # (N,) probability of each entity asked for
    candidates: list[tuple[int, int, int, str, float]] | None  # (row, start, end, label, p)


def crf_decode(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    constraints: CRFConstraints | None = None,
    allowed: numpy.ndarray | None = None,
) -> numpy.ndarray:
    """Viterbi paths (B, T) of one padded batch, padded with -1, copied to the host once."""
    decoded = crf_decode_with_confidence(
        crf, flat_emissions, segments, constraints, allowed=allowed
    )
    return decoded.paths


def crf_decode_with_confidence(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    constraints: CRFConstraints | None = None,
    entities: Callable[[numpy.ndarray], Sequence[Entity]] | None = None,
    scheme: Any = None,
    tag_names: Sequence[str] = (),
    temperature: float = 1.0,
    *,
    allowed: numpy.ndarray | None = None,
    candidates: CandidateRequest | None = None,
) -> Decoded:
    """Viterbi paths, and optionally the probabilities of the paths, entities and candidates.

    ``entities`` maps the decoded paths to the spans to score (the predicted entities);
    ``candidates`` asks for every span above a threshold. Both are read from one
    forward-backward pass over the padded batch, whose log Z also gives each row's best-path
    probability. The probabilities are those of the CRF whose scores are divided by
    ``temperature``; the paths do not depend on it. ``allowed`` (N, K) bool restricts the
    tags of each flat row (see ``pad_emissions``).
    """
    import torch

    from .confidence import candidate_probabilities, span_probabilities
    from .crf import SpanPosteriors, viterbi

    with torch.no_grad():
        flat = xp2torch(flat_emissions)
        emissions, mask = pad_emissions(flat, segments, allowed)
        params = crf_params(crf)
        paths, scores = viterbi(emissions, mask, *params, constraints)
        host_paths = paths.cpu().numpy()
        if entities is None and candidates is None:
            return Decoded(host_paths, None, None, None)
        emissions, params = tempered(emissions, params, temperature)
        posteriors = SpanPosteriors(emissions, mask, *params, constraints)
        log_z = posteriors.log_z
        path_probs = torch.exp(scores.double() / temperature - log_z).cpu().numpy()
        entity_probs = None
        if entities is not None:
            spans = entities(host_paths)
            entity_probs = span_probabilities(posteriors, scheme, tag_names, spans)
            entity_probs = entity_probs.double().cpu().numpy()
        found = None
        if candidates is not None:
            found = candidate_probabilities(
                posteriors,
                scheme,
                tag_names,
                candidates.labels,
                candidates.max_length,
                candidates.threshold,
            )
    return Decoded(host_paths, path_probs, entity_probs, found)


def crf_nbest(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    k: int,
    constraints: CRFConstraints | None = None,
    temperature: float = 1.0,
    allowed: numpy.ndarray | None = None,
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The ``k`` best paths of each row, ``(B, k, T)`` padded with -1, and their
    probabilities ``(B, k)`` (0 for ranks beyond the number of allowed paths)."""
    import torch

    from .crf import log_partition, nbest

    with torch.no_grad():
        emissions, mask = pad_emissions(xp2torch(flat_emissions), segments, allowed)
        params = crf_params(crf)
        paths, scores = nbest(emissions, mask, *params, k, constraints)
        emissions, params = tempered(emissions, params, temperature)
        log_z = log_partition(emissions, mask, *params, constraints)
        scores = scores.double() / temperature
        probs = torch.exp(scores - log_z.double().unsqueeze(1))
    return paths.cpu().numpy(), probs.cpu().numpy()
