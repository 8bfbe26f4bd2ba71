"""The glue between Thinc and the CRF engine: one padded batch of CRF sequences.

The component's model outputs flat emissions, one ``(n_tokens, K)`` row per token of a
batch; the engine (``crf.py``) works on padded ``(B, T, K)`` tensors, one row per CRF
sequence (a doc, or a sentence). This module

* lays the sequences out (``Segments``) and gathers the padded batch from the flat
  emissions in one indexing op, viewing the Thinc arrays as torch tensors without copying;
* applies per-token allowed tags (e.g. no entity edge on a whitespace token) as -inf
  emissions, so that decoding finds the best *allowed* path and probabilities are
  normalised over the allowed paths only;
* builds one ``CRFBatch`` per batch (emissions padded once, the scans it has run cached) that
  answers the loss, Viterbi, n-best, marginals and the path, entity and candidate
  probabilities, and copies the results to the host once per batch.

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
# The batch object


class CRFBatch:
    """One padded batch of CRF sequences, built once and asked lazily for what is needed.

    Like torch-struct's ``StructDistribution``: the flat emissions are padded (and the
    per-token allowed tags applied) once, in ``__init__``; every scan is run at most once and
    cached: the Viterbi scan (``viterbi``, ``path_log_prob``), the forward-backward pass
    (``posteriors``: ``log_z``, ``marginals``, ``entity_probs``, ``candidates``) and, if no
    forward-backward pass is needed, a forward-only log Z (``nbest``). Probabilities are those
    of the CRF whose scores are divided by ``temperature`` (the paths do not depend on it).

    Args:
        crf: the ``CRFLayer`` whose params are the transitions, start and end scores.
        flat_emissions: ``(N, K)`` emissions of every token of the batch.
        segments: where each of the B sequences lies in the flat rows (``make_segments``).
        constraints: allowed-move masks on the params' device, or None.
        allowed: ``(N, K)`` bool, the tags each flat row may take (others get -inf).
        temperature: divides every path score for the probabilities.
        algorithm: ``"auto"``, ``"sequential"`` or ``"parallel"`` (see ``crf.choose_algorithm``).
        requires_grad: keep the emissions and params in the graph (for ``nll``).
    """

    def __init__(
        self,
        crf: Model,
        flat_emissions: Floats2d,
        segments: Segments,
        constraints: CRFConstraints | None = None,
        *,
        allowed: numpy.ndarray | None = None,
        temperature: float = 1.0,
        algorithm: str = "auto",
        requires_grad: bool = False,
    ) -> None:
        self.segments = segments
        self.constraints = constraints
        self.temperature = temperature
        self.algorithm = algorithm
        self._flat = xp2torch(flat_emissions, requires_grad=requires_grad)
        self._params = crf_params(crf, requires_grad=requires_grad)
        self.emissions, self.mask = pad_emissions(self._flat, segments, allowed)
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _tempered(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self._cached(
            "tempered",
            lambda: tempered(
                self.emissions.detach(), [p.detach() for p in self._params], self.temperature
            ),
        )

    # Training

    def nll(
        self, gold: numpy.ndarray, recall_cost: float = 0.0, outside_tag: int | None = None
    ) -> tuple[float, Floats2d, dict[str, Any]]:
        """Summed negative log-likelihood of ``gold`` and its gradients (batch built with
        ``requires_grad=True``; temperature 1).

        Args:
            gold: ``(B, T)`` tag ids aligned with ``segments.index``; -1 is a missing label
                (any tag allowed there).
            recall_cost: with ``outside_tag`` (the ``O`` tag's id), the softmax-margin loss
                whose cost is this much for every gold entity token tagged ``O`` (a
                recall-oriented cost, as Mohit et al. 2012 for the perceptron); 0: the NLL.

        Returns:
            The loss, its gradient w.r.t. the flat emissions ``(N, K)`` (0 in rows no sequence
            uses) and the gradients of the CRF params by name, for ``crf.inc_grad``.

        Raises:
            NonFiniteLoss: some sequences have no path consistent with gold and constraints.
        """
        import torch

        from .crf import nll

        if not self._flat.requires_grad:
            raise ValueError("CRFBatch.nll needs a batch built with requires_grad=True")
        gold_t = torch.as_tensor(gold, device=self._flat.device)
        kwargs = {"constraints": self.constraints, "reduction": "none", "algorithm": self.algorithm}
        if recall_cost and outside_tag is not None:
            missed = (gold_t >= 0) & (gold_t != outside_tag)
            cost = torch.zeros_like(self.emissions)
            cost[..., outside_tag] = recall_cost * missed.to(cost.dtype)
            kwargs["cost"] = cost
        if bool((gold[self.segments.index >= 0] >= 0).all()):
            losses = nll(
                self.emissions, self.mask, *self._params, tags=gold_t.clamp(min=0), **kwargs
            )
        else:
            tag_ids = torch.arange(self.emissions.shape[-1], device=self._flat.device)
            allowed = (gold_t.unsqueeze(-1) == tag_ids) | (gold_t < 0).unsqueeze(-1)
            losses = nll(self.emissions, self.mask, *self._params, allowed=allowed, **kwargs)
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            # Two causes: gold tags the constraints (or a -inf transition) rule out, or a
            # model whose scores are NaN/+inf (training diverged). The messages differ.
            scores_finite = bool(torch.isfinite(self.emissions).all()) and not any(
                bool((p.isnan() | (p == float("inf"))).any()) for p in self._params
            )
            rows = [int(i) for i in (~finite).nonzero().flatten()]
            raise NonFiniteLoss(rows, scores_finite=scores_finite)
        loss = losses.sum()
        grads = torch.autograd.grad(loss, [self._flat, *self._params])
        d_flat = torch2xp(grads[0])
        param_grads = {name: torch2xp(g) for name, g in zip(CRF_PARAMS, grads[1:], strict=True)}
        return float(loss.detach()), d_flat, param_grads

    # Prediction

    def _viterbi(self) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from .crf import viterbi

        def run():
            with torch.no_grad():
                params = [p.detach() for p in self._params]
                return viterbi(
                    self.emissions.detach(), self.mask, *params, self.constraints,
                    algorithm=self.algorithm,
                )  # fmt: skip

        return self._cached("viterbi", run)

    def viterbi(self) -> numpy.ndarray:
        """Best paths ``(B, T)`` on the host, padded with -1 (copied once)."""
        return self._cached("host_paths", lambda: self._viterbi()[0].cpu().numpy())

    @property
    def posteriors(self):
        """The forward-backward pass of the tempered batch (``crf.SpanPosteriors``), cached."""
        import torch

        from .crf import SpanPosteriors

        def run():
            with torch.no_grad():
                emissions, params = self._tempered()
                return SpanPosteriors(
                    emissions, self.mask, *params, self.constraints, algorithm=self.algorithm
                )

        return self._cached("posteriors", run)

    def log_z(self) -> torch.Tensor:
        """``(B,)`` float64 log partition of the tempered batch: from the forward-backward
        pass if it has run, else from a forward scan only."""
        import torch

        from .crf import log_partition

        if "posteriors" in self._cache:
            return self._cache["posteriors"].log_z

        def run():
            with torch.no_grad():
                emissions, params = self._tempered()
                return log_partition(
                    emissions, self.mask, *params, self.constraints, algorithm=self.algorithm
                ).double()

        return self._cached("log_z", run)

    def marginals(self) -> torch.Tensor:
        """Posterior tag probabilities ``(B, T, K)`` (0 at padding), from ``posteriors``."""
        return self.posteriors.marginals

    def path_log_prob(self) -> torch.Tensor:
        """``(B,)`` float64 log probability of each row's Viterbi path. Its log Z is the
        forward-backward pass's (``posteriors``), which the entity probabilities of the same
        batch need anyway: asking for both runs the forward scan once."""
        scores = self._viterbi()[1]
        return scores.double() / self.temperature - self.posteriors.log_z

    def nbest(self, k: int) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The ``k`` best paths ``(B, k, T)`` (-1 padding) and their probabilities ``(B, k)``
        (0 beyond the number of allowed paths), on the host. n-best is always sequential."""
        import torch

        from .crf import nbest

        with torch.no_grad():
            params = [p.detach() for p in self._params]
            paths, scores = nbest(self.emissions.detach(), self.mask, *params, k, self.constraints)
            log_probs = scores.double() / self.temperature - self.log_z().unsqueeze(1)
            probs = torch.exp(log_probs)
        return paths.cpu().numpy(), probs.cpu().numpy()

    def entity_probs(
        self, scheme: Any, tag_names: Sequence[str], spans: Sequence[Entity]
    ) -> numpy.ndarray:
        """Exact probability ``(N,)`` of each labelled span ``(row, start, end, label)``."""
        from .confidence import span_probabilities

        probs = span_probabilities(self.posteriors, scheme, tag_names, spans)
        return probs.double().cpu().numpy()

    def candidates(
        self, scheme: Any, tag_names: Sequence[str], request: CandidateRequest
    ) -> list[tuple[int, int, int, str, float]]:
        """Every span ``request`` asks for at or above its threshold:
        ``(row, start, end, label, probability)``."""
        from .confidence import candidate_probabilities

        return candidate_probabilities(
            self.posteriors, scheme, tag_names, request.labels, request.max_length,
            request.threshold,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Training


class NonFiniteLoss(ValueError):
    """Some sequences have a non-finite loss: no path consistent with their gold tags and
    the constraints (``scores_finite``), or non-finite emission/transition scores."""

    def __init__(self, rows: list[int], scores_finite: bool = True) -> None:
        super().__init__(f"non-finite CRF loss for sequences {rows}")
        self.rows = rows
        self.scores_finite = scores_finite


def crf_loss(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    gold: numpy.ndarray,
    constraints: CRFConstraints | None = None,
    recall_cost: float = 0.0,
    outside_tag: int | None = None,
) -> tuple[float, Floats2d, dict[str, Any]]:
    """Summed CRF negative log-likelihood of one padded batch, in one CRF call.

    ``gold`` is (B, T) tag ids aligned with ``segments.index``; -1 marks a missing label (any
    tag allowed there). Returns the loss, its gradient w.r.t. the flat emissions (rows that no
    segment uses get 0) and the gradients of the CRF params, for ``crf.inc_grad``.
    ``recall_cost``/``outside_tag``: see ``CRFBatch.nll``.
    """
    batch = CRFBatch(crf, flat_emissions, segments, constraints, requires_grad=True)
    return batch.nll(gold, recall_cost, outside_tag)


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
    batch = CRFBatch(
        crf, flat_emissions, segments, constraints, allowed=allowed, temperature=temperature
    )
    host_paths = batch.viterbi()
    if entities is None and candidates is None:
        return Decoded(host_paths, None, None, None)
    # One forward-backward pass serves the path, entity and candidate probabilities.
    path_probs = numpy.exp(batch.path_log_prob().cpu().numpy())
    entity_probs = None
    if entities is not None:
        entity_probs = batch.entity_probs(scheme, tag_names, entities(host_paths))
    found = None
    if candidates is not None:
        found = batch.candidates(scheme, tag_names, candidates)
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
    batch = CRFBatch(
        crf, flat_emissions, segments, constraints, allowed=allowed, temperature=temperature
    )
    return batch.nbest(k)
