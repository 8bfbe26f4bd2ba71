"""Thinc layers of the CRF tagger.

* ``CRFLayer`` owns the CRF parameters (``transitions (K, K)``, ``start (K,)``, ``end (K,)``)
  as ordinary Thinc params, so that spaCy's optimizer steps them, ``require_gpu`` moves them
  and they are saved with the rest of the model through msgpack. Its forward passes the
  emissions through unchanged: the loss and the decoding need gold tags and constraints,
  which only the pipeline component knows, so they live in ``crf_batch.py`` (the glue that
  runs the PyTorch CRF on the Thinc arrays of one batch).
* ``PackedBiLSTM`` is a bidirectional ``torch.nn.LSTM`` in which padding never enters the
  backward direction (each doc is reversed within its own length) and whose weights are saved
  as msgpack'd numpy arrays, so loading a pipeline never unpickles anything.
* ``FixedDropout`` is dropout at a rate that spaCy's ``[training] dropout`` does not change;
  ``WordDropout`` drops whole tokens' embeddings (unknown-word training), at its own rate too;
  ``FeatureDropout`` replaces some of a token's hashed features (its NORM, say) by an unknown
  key instead, so that its other features (affixes, shape) stay.

Torch is imported inside the functions: spaCy imports the entry-point modules that import
this one whenever it enumerates factories.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import numpy
import srsly
from thinc.api import ArgsKwargs, Model, PyTorchWrapper_v3, torch2xp, xp2torch
from thinc.types import Floats2d, Ragged

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


# --------------------------------------------------------------------------------------------
# BiLSTM


def PackedBiLSTM(
    nO: int, nI: int, *, depth: int = 1, dropout: float = 0.0
) -> Model[list[Floats2d], list[Floats2d]]:
    """A bidirectional LSTM over the tokens of each doc; ``nO`` = 2 x hidden size.

    Padding never enters the backward direction (see ``PackedLSTMModule.forward``), so a doc's
    output does not depend on its batch. "Packed" is from its first version (``nn.LSTM`` over
    packed sequences); the names stay, since the export and tests find the node by its name.
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
    """The torch module: a bidirectional ``torch.nn.LSTM`` and the forward of ``PackedBiLSTM``."""
    return _lstm_module_class()(n_in, n_hidden, depth, dropout)


@functools.cache
def _lstm_module_class() -> type:
    """Define the torch module class on first use, so that torch is imported only then.

    It is reachable as ``spacy_crf_ner.layers.PackedLSTMModule`` (module ``__getattr__``),
    so that pipelines holding it can be pickled, e.g. for ``nlp.pipe(n_process=2)``.
    """
    import torch
    from torch.nn.utils.rnn import pad_sequence

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
            """(N, nI) rows of non-empty docs and their lengths (on the host) -> (N, nO).

            Not ``nn.LSTM`` over a ``PackedSequence``: on the CPU its backward is per-step
            autograd, several times slower than the fused kernel torch uses for padded input
            (training 3.1-3.4x faster without it, BENCHMARKS.md §4.1). Docs are padded at
            their end in groups of similar length, each LSTM direction runs as its own
            ``torch.lstm`` call with this module's weights, and the backward direction reads
            each doc reversed within its own length, so padding enters neither direction: the
            same outputs as the packed LSTM (float rounding apart) with the same parameters,
            so saved pipelines load as before.
            """
            sizes = lengths.tolist()
            seqs = torch.split(flat, sizes)
            outputs: list[Any] = [None] * len(sizes)
            for group in _padding_groups(sizes):
                padded = pad_sequence([seqs[i] for i in group], batch_first=True)
                hidden = self._bidirectional(padded, lengths[group])
                for row, i in enumerate(group):
                    outputs[i] = hidden[row, : sizes[i]]
            return torch.cat(outputs)

        def _bidirectional(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            """(B, T, nI) docs padded at their end -> (B, T, nO), padding rows undefined."""
            lstm = self.lstm
            steps = torch.arange(x.shape[1])
            # Position t of a doc of length n reads position n-1-t; padding stays in place.
            reverse = torch.where(
                steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps
            ).to(x.device)
            zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
            with _quiet_cudnn_weights(x.is_cuda):
                for layer in range(lstm.num_layers):
                    if layer:
                        x = torch.nn.functional.dropout(x, lstm.dropout, self.training)
                    directions = []
                    for suffix in ("", "_reverse"):
                        weights = [
                            getattr(lstm, f"{name}_l{layer}{suffix}")
                            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                        ]
                        inputs = x if not suffix else _gather_steps(x, reverse)
                        out, _, _ = torch.lstm(
                            inputs,
                            (zeros, zeros),
                            weights,
                            has_biases=True,
                            num_layers=1,
                            dropout=0.0,
                            train=self.training,
                            bidirectional=False,
                            batch_first=True,
                        )
                        directions.append(out if not suffix else _gather_steps(out, reverse))
                    x = torch.cat(directions, dim=2)
            return x

    def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x[b, index[b, t]]`` for (B, T, D) ``x``."""
        return torch.gather(x, 1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))

    PackedLSTMModule.__module__ = __name__
    PackedLSTMModule.__qualname__ = "PackedLSTMModule"
    return PackedLSTMModule


@contextlib.contextmanager
def _quiet_cudnn_weights(on_cuda: bool) -> Iterator[None]:
    """On CUDA, silence cuDNN's warning that an LSTM's weights are not one contiguous chunk:
    ``PackedLSTMModule`` passes one direction's four tensors (not ``flatten_parameters``'s
    buffer, which holds both), and cuDNN would warn on every call. Nothing to do on the CPU,
    which keeps ``warnings``' global state out of the hot path there."""
    if not on_cuda:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not")
        yield


def _padding_groups(lengths: list[int], waste: float = 1.25) -> list[list[int]]:
    """Indices of docs to pad together: longest first, a group growing while its padded size
    stays within ``waste`` times its tokens. Padding costs time even on the CPU: 1.1-1.25 are
    the fastest, one group for the batch 1.7x (CoNLL articles, training) and 2.8x (256
    sentences, prediction) slower (``benchmarks/lstm_padding.py``, BENCHMARKS.md §4.1). It
    also bounds memory: a 100,000-token doc is not padded to by a batch of sentences."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    tokens = 0
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= waste * (
            tokens + lengths[i]
        ):
            groups[-1].append(i)
            tokens += lengths[i]
        else:
            groups.append([i])
            tokens = lengths[i]
    return groups


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


def WordDropout(rate: float) -> Model[list[Floats2d], list[Floats2d]]:
    """Word dropout (Lample et al. 2016): in training, each token's embedding row is zeroed
    at ``rate``, as if the word were unknown, so that the encoder also learns to tag from
    the context and the other features (characters, n-grams) — which is what it has for
    the unseen words of real text. Whole rows, not scaled: a dropped word is an unknown
    word, not a louder known one. The rate is its own, like ``FixedDropout``'s.
    """
    return Model("word_dropout", _word_dropout_forward, attrs={"rate": rate})


def _word_dropout_forward(
    model: Model, Xs: list[Floats2d], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    rate = model.attrs["rate"]
    if not is_train or rate <= 0.0:
        return Xs, lambda dYs: dYs
    ops = model.ops
    masks = [
        ops.asarray2f((ops.xp.random.uniform(size=(X.shape[0], 1)) >= rate).astype("float32"))
        for X in Xs
    ]

    def backprop(dYs: list[Floats2d]) -> list[Floats2d]:
        return [dY * mask for dY, mask in zip(dYs, masks, strict=True)]

    return [X * mask for X, mask in zip(Xs, masks, strict=True)], backprop


# The key a dropped feature is replaced by: spaCy's ID of the empty string, which no token's
# NORM, LOWER, PREFIX, SUFFIX or SHAPE has. HashEmbed hashes it like any other key, so the
# "unknown word" gets embedding rows of its own that training learns.
UNKNOWN_KEY = 0


def FeatureDropout(rate: float, columns: list[int]) -> Model[Ragged, Ragged]:
    """Word dropout for some features only: in training, each token's feature keys in
    ``columns`` (of spaCy's ``FeatureExtractor`` output) are replaced by ``UNKNOWN_KEY`` at
    ``rate``, all of a token's columns together. ``WordDropout`` zeroes a token's whole
    embedding, affixes and shape included; but an unseen word in real text still has a
    known shape and known affixes, only its identity (NORM) is new. Dropping the identity
    alone is the unknown-word training of Lample et al. (2016), where the word embedding
    is replaced by an UNK vector and the character features stay.
    """
    return Model(
        "feature_dropout",
        _feature_dropout_forward,
        attrs={"rate": rate, "columns": list(columns)},
    )


def _feature_dropout_forward(model: Model, X: Ragged, is_train: bool) -> tuple[Ragged, Callable]:
    rate = model.attrs["rate"]
    if not is_train or rate <= 0.0 or not len(X.dataXd):
        return X, lambda dY: dY
    xp = model.ops.xp
    keys = X.dataXd.copy()
    dropped = xp.random.uniform(size=keys.shape[0]) < rate
    columns = xp.asarray(model.attrs["columns"], dtype="int64")
    keys[xp.nonzero(dropped)[0][:, None], columns[None, :]] = UNKNOWN_KEY
    # The keys are integers: there is no gradient to them, only to the embedding rows.
    return Ragged(keys, X.lengths), lambda dY: dY
