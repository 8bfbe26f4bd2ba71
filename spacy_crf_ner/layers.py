"""Thinc layers of the CRF tagger, and the glue that runs the PyTorch CRF on Thinc arrays.

* ``CRFLayer`` owns the CRF parameters (``transitions (K, K)``, ``start (K,)``, ``end (K,)``)
  as ordinary Thinc params, so that spaCy's optimizer steps them, ``require_gpu`` moves them
  and they are saved with the rest of the model through msgpack. Its forward passes the
  emissions through unchanged: the loss and the decoding need gold tags and constraints,
  which only the pipeline component knows, so they are separate functions (``crf_loss``,
  ``crf_decode``) that view the Thinc arrays as torch tensors without copying.
* ``PackedBiLSTM`` is a bidirectional ``torch.nn.LSTM`` over packed sequences (padding never
  enters the backward direction) whose weights are saved as msgpack'd numpy arrays, so
  loading a pipeline never unpickles anything.

Torch is imported inside the functions: spaCy imports the entry-point modules that import
this one whenever it enumerates factories.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy
import srsly
from thinc.api import ArgsKwargs, Model, PyTorchWrapper_v3, torch2xp, xp2torch
from thinc.types import Floats2d

if TYPE_CHECKING:
    import torch

    from .crf import CRFConstraints

CRF_PARAMS = ("transitions", "start", "end")


# --------------------------------------------------------------------------------------------
# CRF parameters


def CRFLayer(nO: int | None = None) -> Model[list[Floats2d], list[Floats2d]]:
    """Hold the CRF scores as Thinc params; the forward is the identity on the emissions."""
    return Model(
        "crf",
        _crf_forward,
        init=_crf_init,
        dims={"nO": nO},
        params={name: None for name in CRF_PARAMS},
    )


def _crf_forward(
    model: Model, Xs: list[Floats2d], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    def backprop(dYs: list[Floats2d]) -> list[Floats2d]:
        return dYs

    return Xs, backprop


def _crf_init(model: Model, X: Any = None, Y: Any = None) -> None:
    """Zero scores: no transition is preferred before the data says so."""
    if model.has_dim("nO") is None and X:
        model.set_dim("nO", X[0].shape[1])
    n_tags = model.get_dim("nO")
    model.set_param("transitions", model.ops.alloc2f(n_tags, n_tags))
    model.set_param("start", model.ops.alloc1f(n_tags))
    model.set_param("end", model.ops.alloc1f(n_tags))


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


def _crf_params(crf: Model, requires_grad: bool) -> list[torch.Tensor]:
    return [xp2torch(crf.get_param(name), requires_grad=requires_grad) for name in CRF_PARAMS]


def _pad(flat: torch.Tensor, segments: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the (B, T, K) batch from the flat (N, K) emissions in one indexing op."""
    import torch

    index = torch.as_tensor(segments.index, device=flat.device)
    mask = index >= 0
    return flat[index.clamp(min=0)], mask


def crf_device(crf: Model) -> torch.device:
    """The torch device of the CRF params (where constraints must live)."""
    return xp2torch(crf.get_param("transitions")).device


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
    params = _crf_params(crf, requires_grad=True)
    emissions, mask = _pad(flat, segments)
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


def crf_decode(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    constraints: CRFConstraints | None = None,
) -> numpy.ndarray:
    """Viterbi paths (B, T) of one padded batch, padded with -1, copied to the host once."""
    return crf_decode_with_confidence(crf, flat_emissions, segments, constraints)[0]


def crf_decode_with_confidence(
    crf: Model,
    flat_emissions: Floats2d,
    segments: Segments,
    constraints: CRFConstraints | None = None,
    entities: Callable[[numpy.ndarray], Sequence[tuple[int, int, int, str]]] | None = None,
    scheme: Any = None,
    tag_names: Sequence[str] = (),
    temperature: float = 1.0,
) -> tuple[numpy.ndarray, numpy.ndarray | None, numpy.ndarray | None]:
    """Viterbi paths, and optionally each row's best-path probability and entity probabilities.

    ``entities`` maps the decoded paths to the (row, start, end, label) spans to score (the
    predicted entities, candidates, or both); their exact probabilities come from the same
    padded batch in one more CRF call. The probabilities are those of the CRF whose scores
    are divided by ``temperature``; the paths do not depend on it. Returns ``(paths,
    path_probs (B,), entity_probs (N,))``.
    """
    import torch

    from .confidence import entity_probabilities
    from .crf import log_partition, viterbi

    with torch.no_grad():
        flat = xp2torch(flat_emissions)
        emissions, mask = _pad(flat, segments)
        params = _crf_params(crf, False)
        paths, scores = viterbi(emissions, mask, *params, constraints)
        host_paths = paths.cpu().numpy()
        if entities is None:
            return host_paths, None, None
        emissions, params = tempered(emissions, params, temperature)
        scores = scores / temperature
        log_z = log_partition(emissions, mask, *params, constraints)
        path_probs = torch.exp(scores.double() - log_z.double()).cpu().numpy()
        spans = entities(host_paths)
        probs = entity_probabilities(
            emissions, mask, tuple(params), constraints, scheme, tag_names, spans
        )
    return host_paths, path_probs, probs.double().cpu().numpy()


def tempered(
    emissions: torch.Tensor, params: Sequence[torch.Tensor], temperature: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Emissions and CRF params divided by ``temperature``. A path's score is linear in them,
    so every path score is divided by it too: the ranking of paths (Viterbi, n-best) stays,
    the probabilities soften (T > 1) or sharpen (T < 1)."""
    if temperature == 1.0:
        return emissions, list(params)
    return emissions / temperature, [p / temperature for p in params]


def torch_constraints(
    arrays: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray], device: torch.device
) -> CRFConstraints:
    """The scheme's allowed-move masks as bool tensors on ``device``."""
    from .crf import as_constraints

    constraints = as_constraints(arrays, len(arrays[1]), device=device)
    assert constraints is not None
    return constraints


# --------------------------------------------------------------------------------------------
# BiLSTM


def PackedBiLSTM(
    nO: int, nI: int, *, depth: int = 1, dropout: float = 0.0
) -> Model[list[Floats2d], list[Floats2d]]:
    """A bidirectional LSTM over the tokens of each doc; ``nO`` = 2 x hidden size.

    Sequences are packed, so the backward direction starts at each doc's last token rather
    than at the batch's padding, and a doc's output does not depend on its batch.
    """
    if nO % 2:
        raise ValueError(f"PackedBiLSTM: nO must be even (two directions); got {nO}")
    wrapped = PyTorchWrapper_v3(
        _make_lstm_module(nI, nO // 2, depth, dropout),
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        serialize_model=serialize_state_dict,
        deserialize_model=deserialize_state_dict,
    )
    wrapped.set_dim("nI", nI)
    wrapped.set_dim("nO", nO)
    return Model(
        "packed_bilstm",
        _bilstm_forward,
        layers=[wrapped],
        dims={"nO": nO, "nI": nI},
    )


def _make_lstm_module(n_in: int, n_hidden: int, depth: int, dropout: float) -> Any:
    """The torch module (a bidirectional ``torch.nn.LSTM`` over packed sequences)."""
    return _lstm_module_class()(n_in, n_hidden, depth, dropout)


@functools.cache
def _lstm_module_class() -> type:
    """Define the torch module class on first use, so that torch is imported only then.

    It is reachable as ``spacy_crf_ner.layers.PackedLSTMModule`` (module ``__getattr__``),
    so that pipelines holding it can be pickled, e.g. for ``nlp.pipe(n_process=2)``.
    """
    import torch
    from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

    class PackedLSTMModule(torch.nn.Module):
        def __init__(self, n_in: int, n_hidden: int, depth: int, dropout: float) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(
                n_in,
                n_hidden,
                num_layers=depth,
                bidirectional=True,
                batch_first=True,
                dropout=dropout if depth > 1 else 0.0,
            )

        def forward(self, flat: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            """(N, nI) rows of non-empty docs and their lengths (on the host) -> (N, nO)."""
            seqs = list(torch.split(flat, lengths.tolist()))
            packed, _ = self.lstm(pack_sequence(seqs, enforce_sorted=False))
            padded, _ = pad_packed_sequence(packed, batch_first=True)
            steps = torch.arange(padded.shape[1], device=padded.device)
            return padded[steps.unsqueeze(0) < lengths.to(padded.device).unsqueeze(1)]

    PackedLSTMModule.__module__ = __name__
    PackedLSTMModule.__qualname__ = "PackedLSTMModule"
    return PackedLSTMModule


def __getattr__(name: str) -> Any:
    if name == "PackedLSTMModule":
        return _lstm_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bilstm_forward(
    model: Model, Xs: list[Floats2d], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    """Skip torch for batches without tokens (packing needs at least one sequence)."""
    if sum(len(X) for X in Xs) == 0:
        n_out = model.get_dim("nO")

        def backprop_empty(dYs: list[Floats2d]) -> list[Floats2d]:
            return [model.ops.alloc2f(*X.shape) for X in Xs]

        return [model.ops.alloc2f(len(X), n_out) for X in Xs], backprop_empty
    return model.layers[0](Xs, is_train)


def _convert_inputs(
    model: Model, Xs: list[Floats2d], is_train: bool
) -> tuple[ArgsKwargs, Callable]:
    import torch

    lengths = [len(X) for X in Xs]
    flat = xp2torch(model.ops.flatten(Xs), requires_grad=is_train, device=model.shims[0].device)
    nonempty = torch.tensor([n for n in lengths if n > 0], dtype=torch.int64)

    def backprop(d_inputs: ArgsKwargs) -> list[Floats2d]:
        return model.ops.unflatten(torch2xp(d_inputs.args[0]), numpy.asarray(lengths))

    return ArgsKwargs(args=(flat, nonempty), kwargs={}), backprop


def _convert_outputs(
    model: Model, inputs_outputs: tuple[list[Floats2d], Any], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    Xs, Y_torch = inputs_outputs
    lengths = numpy.asarray([len(X) for X in Xs])
    Ys = model.ops.unflatten(torch2xp(Y_torch), lengths)

    def backprop(dYs: list[Floats2d]) -> ArgsKwargs:
        dY = xp2torch(model.ops.flatten(dYs), device=model.shims[0].device)
        return ArgsKwargs(args=(Y_torch,), kwargs={"grad_tensors": dY})

    return Ys, backprop


def serialize_state_dict(module: Any) -> bytes:
    """The module's tensors as msgpack'd numpy arrays: no pickle, unlike ``torch.save``."""
    state = {key: value.detach().cpu().numpy() for key, value in module.state_dict().items()}
    return srsly.msgpack_dumps(state)


def deserialize_state_dict(module: Any, data: bytes, device: Any) -> Any:
    """Load weights without ever unpickling.

    Thinc's default deserializer calls ``torch.load`` without ``weights_only=True``; this
    one reads msgpack'd arrays, and accepts a ``torch.save`` archive (Thinc's format) only
    through ``torch.load(weights_only=True)``. Raises ValueError on anything unexpected.
    """
    import torch

    if data[:2] == b"PK":  # a zip archive written by torch.save
        state = torch.load(BytesIO(data), map_location="cpu", weights_only=True)
    else:
        raw = srsly.msgpack_loads(data)
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, numpy.ndarray) for k, v in raw.items()
        ):
            raise ValueError("LSTM weights: expected a mapping of names to arrays")
        state = {key: torch.from_numpy(numpy.array(value)) for key, value in raw.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:  # wrong names or shapes: a model of another size
        raise ValueError(f"LSTM weights do not fit the configured model: {err}") from None
    return module.to(device)


# --------------------------------------------------------------------------------------------
# Dropout


def FixedDropout(rate: float) -> Model[Floats2d, Floats2d]:
    """Dropout at a rate of its own.

    Thinc's ``Dropout`` keeps its rate in ``attrs["dropout_rate"]``, which spaCy overwrites
    with ``[training] dropout`` on every update; this rate stays what the config says.
    """
    return Model("fixed_dropout", _fixed_dropout_forward, attrs={"rate": rate})


def _fixed_dropout_forward(model: Model, X: Floats2d, is_train: bool) -> tuple[Floats2d, Callable]:
    rate = model.attrs["rate"]
    if not is_train or rate <= 0.0:
        return X, lambda dY: dY
    mask = model.ops.get_dropout_mask(X.shape, rate)
    return X * mask, lambda dY: dY * mask
