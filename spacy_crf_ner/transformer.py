"""The transformer encoder path: sub-word pooling, cased features and transformer tuning.

Used with spacy-transformers: a ``transformer`` component (``TransformerModel.v3``) runs
the Hugging Face model over (strided) windows of each doc, and ``crf_ner``'s
``CRFTagger.v1`` reads token vectors through a ``TransformerListener.v1``. This module adds:

* ``spacy_crf_ner.subword_pooling.v1`` (a layer): token vector = its first word piece or
  the mean of its pieces. Tokens with no word piece at all (whitespace tokens, control
  characters, and, with a slow tokenizer, ``[UNK]`` characters such as emoji or rare CJK
  characters) get a zero vector: Thinc's ``reduce_first.v1`` raises on them.
* ``spacy_crf_ner.CasedFeatures.v1`` (an architecture): the token vectors of any tok2vec
  concatenated with hash embeddings of SHAPE/PREFIX/SUFFIX, so that the head sees
  capitalisation even when the transformer is uncased (and whitespace tokens get a
  non-zero vector).
* ``spacy_crf_ner.configure_transformer.v1`` (an ``[initialize.after_init]`` callback):
  freeze the embeddings and the lower N layers of the loaded Hugging Face model, or all of
  it, and scale the transformer's learning rate relative to the head's.
* ``spacy_crf_ner.resolve_transformer_path.v1`` (an ``[initialize.before_init]``
  callback): a relative local model path is resolved from the config file's folder (then
  the working directory), and a local path that does not exist is a clear error instead of
  a failed hub download.

Nothing heavy is imported at module level (spaCy imports this module through its entry
points): torch only inside the callback.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacy.ml.models.tok2vec import MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d, Ragged

if TYPE_CHECKING:
    import torch
    from spacy.language import Language

POOLING_MODES = ("first", "mean")


# --------------------------------------------------------------------------------------------
# Sub-word pooling


@registry.layers("spacy_crf_ner.subword_pooling.v1")
def subword_pooling(mode: str = "first") -> Model[Ragged, Floats2d]:
    """Word-piece vectors (ragged, one group per token) -> one float32 vector per token.

    mode: "first" (the token's first word piece, as in BERT's NER recipe) or "mean" (the
        average of its pieces). Where the windows of ``strided_spans`` overlap, a token has
        pieces in two windows: "first" takes the earlier window's, "mean" averages both.
    Tokens without any word piece get zeros, and no gradient flows from them. The output is
    float32 whatever the input's dtype (float16 under mixed precision).
    """
    if mode not in POOLING_MODES:
        raise ValueError(
            f"[crf_ner] Unknown sub-word pooling mode {mode!r}: use one of {POOLING_MODES}."
        )
    forward = _first_forward if mode == "first" else _mean_forward
    return Model(f"subword_pooling_{mode}", forward, attrs={"mode": mode})


def _first_forward(model: Model, Xr: Ragged, is_train: bool) -> tuple[Floats2d, Callable]:
    xp = model.ops.xp
    X = Xr.dataXd
    lengths = xp.asarray(Xr.lengths, dtype="int64")
    starts = xp.cumsum(lengths) - lengths
    has_piece = xp.flatnonzero(lengths > 0)
    rows = starts[has_piece]
    Y = model.ops.alloc2f(len(lengths), X.shape[1])
    Y[has_piece] = X[rows]

    def backprop(dY: Floats2d) -> Ragged:
        dX = model.ops.alloc2f(X.shape[0], X.shape[1], dtype=X.dtype)
        dX[rows] = dY[has_piece]
        return Ragged(dX, Xr.lengths)

    return Y, backprop


def _mean_forward(model: Model, Xr: Ragged, is_train: bool) -> tuple[Floats2d, Callable]:
    xp = model.ops.xp
    X = Xr.dataXd
    lengths = xp.asarray(Xr.lengths, dtype="int64")
    owner = xp.repeat(xp.arange(len(lengths), dtype="int32"), lengths)
    scale = (1.0 / xp.maximum(lengths, 1)).astype("float32")[:, None]
    Y = model.ops.alloc2f(len(lengths), X.shape[1])
    model.ops.scatter_add(Y, owner, xp.ascontiguousarray(X, dtype="float32"))
    Y *= scale

    def backprop(dY: Floats2d) -> Ragged:
        dX = (dY * scale)[owner]
        return Ragged(dX.astype(X.dtype, copy=False), Xr.lengths)

    return Y, backprop


# --------------------------------------------------------------------------------------------
# Cased features


@registry.architectures("spacy_crf_ner.CasedFeatures.v1")
def build_cased_features(
    tok2vec: Model[list[Doc], list[Floats2d]],
    width: int = 64,
    embed_size: int = 2000,
    attrs: list[str] | None = None,
) -> Model[list[Doc], list[Floats2d]]:
    """A tok2vec's vectors, concatenated with hash embeddings of surface features.

    An uncased transformer (e.g. all-MiniLM-L6-v2) lowercases its input, so "Apple" and
    "apple" look the same to it; SHAPE ("Xxxxx"), PREFIX and SUFFIX give the head the case.
    tok2vec: any token-to-vector model, e.g. ``spacy-transformers.TransformerListener.v1``.
    width: width of the surface-feature embedding (spaCy's MultiHashEmbed, mixed by Maxout).
    embed_size: rows of each hash-embedding table.
    attrs: the token attributes, default SHAPE, PREFIX, SUFFIX.
    The output width is the tok2vec's width + ``width``.
    """
    if attrs is None:
        attrs = ["SHAPE", "PREFIX", "SUFFIX"]
    embed: Model[list[Doc], list[Floats2d]] = MultiHashEmbed(
        width=width,
        attrs=list(attrs),
        rows=[embed_size] * len(attrs),
        include_static_vectors=False,
    )
    model: Model[list[Doc], list[Floats2d]] = Model(
        "cased_features",
        _cased_forward,
        init=_cased_init,
        layers=[tok2vec, embed],
        dims={"nO": None},
    )
    if tok2vec.has_dim("nO"):
        model.set_dim("nO", tok2vec.get_dim("nO") + width)
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("embed", embed)
    return model


def _tok2vec_width(tok2vec: Model, docs: list[Doc] | None) -> int | None:
    """The tok2vec's output width: its nO, its listener's, or what it outputs on ``docs``."""
    if tok2vec.has_dim("nO"):
        return tok2vec.get_dim("nO")
    if tok2vec.has_ref("listener") and tok2vec.get_ref("listener").has_dim("nO"):
        return tok2vec.get_ref("listener").get_dim("nO")
    if docs:
        widths = {Y.shape[1] for Y in tok2vec.predict(docs) if len(Y)}
        if len(widths) == 1:
            return widths.pop()
    return None


def _cased_init(model: Model, X: list[Doc] | None = None, Y: Any = None) -> None:
    tok2vec, embed = model.layers
    tok2vec.initialize(X=X)
    embed.initialize(X=X)
    width = _tok2vec_width(tok2vec, X)
    if width is not None:
        model.set_dim("nO", width + embed.get_dim("nO"), force=True)


def _cased_forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    """Concatenate per doc. Unlike Thinc's ``concatenate``, this tolerates the (0, 0) arrays
    that spacy-transformers gives empty docs next to non-empty ones in a batch."""
    tok2vec, embed = model.layers
    Ys, bp_tok2vec = tok2vec(docs, is_train)
    Es, bp_embed = embed(docs, is_train)
    n_embed = embed.get_dim("nO")
    width = model.get_dim("nO") - n_embed
    ops = model.ops
    outputs = [
        ops.xp.hstack((Y, E)) if len(E) else ops.alloc2f(0, width + n_embed)
        for Y, E in zip(Ys, Es, strict=True)
    ]

    def backprop(dOs: list[Floats2d]) -> list[Doc]:
        dYs = [
            ops.as_contig(dO[:, :width]) if len(Y) else ops.alloc2f(*Y.shape)
            for dO, Y in zip(dOs, Ys, strict=True)
        ]
        bp_embed([ops.as_contig(dO[:, width:]) for dO in dOs])
        bp_tok2vec(dYs)
        return []

    return outputs, backprop


# --------------------------------------------------------------------------------------------
# Freezing and learning-rate scale


@registry.callbacks("spacy_crf_ner.configure_transformer.v1")
def make_configure_transformer(
    component: str = "transformer",
    freeze_layers: int = 0,
    learn_rate_scale: float = 1.0,
) -> Callable[[Language], Language]:
    """An ``[initialize.after_init]`` callback that tunes how the transformer trains.

    component: the name of the spacy-transformers ``transformer`` component.
    freeze_layers: 0 trains everything; N > 0 freezes the embeddings and the lower N
        encoder layers (``requires_grad = False``: no gradient is computed for them and the
        optimizer skips them); -1 (or N >= the number of layers) freezes the whole model.
    learn_rate_scale: the transformer's learning rate (and weight decay) is the optimizer's
        times this, e.g. 0.05 for 5e-5 under a head rate of 1e-3. The rest of the pipeline
        (the CRF head, cased features) keeps the optimizer's rate.

    It runs after ``nlp.initialize`` has loaded the Hugging Face model, i.e. in
    ``spacy train``; a pipeline loaded with ``spacy.load`` is not affected.
    """
    if freeze_layers < -1:
        raise ValueError(f"[crf_ner] freeze_layers must be -1, 0 or positive: {freeze_layers}")
    if learn_rate_scale < 0:
        raise ValueError(f"[crf_ner] learn_rate_scale must be >= 0: {learn_rate_scale}")

    def configure_transformer(nlp: Language) -> Language:
        model = _transformer_model(nlp, component)
        if freeze_layers:
            freeze_transformer(model.transformer, freeze_layers)
        if learn_rate_scale != 1.0:
            scale_learn_rate(model, learn_rate_scale)
        return nlp

    return configure_transformer


def _transformer_model(nlp: Language, component: str) -> Any:
    """The TransformerModel of a spacy-transformers component, with its HF model loaded."""
    if component not in nlp.pipe_names:
        raise ValueError(
            f"[crf_ner] configure_transformer: no component '{component}' in the pipeline "
            f"{nlp.pipe_names}; set its 'component' to the transformer component's name."
        )
    # A component without a model (a sentencizer, say) must get the same error as one with
    # a model that is not a transformer, not an AttributeError.
    model = getattr(nlp.get_pipe(component), "model", None)
    if getattr(model, "transformer", None) is None:
        raise ValueError(
            f"[crf_ner] configure_transformer: component '{component}' has no loaded "
            "transformer model; use the callback in [initialize.after_init] of a pipeline "
            "with a spacy-transformers 'transformer' component."
        )
    return model


def encoder_layers(hf_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The encoder's stack of layers: the first ModuleList as long as the model is deep."""
    import torch

    depth = getattr(hf_model.config, "num_hidden_layers", None)
    for _, module in hf_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return list(module)
    raise ValueError(
        f"[crf_ner] Can't find the {depth} encoder layers of {type(hf_model).__name__}."
    )


def freeze_transformer(hf_model: torch.nn.Module, n_layers: int) -> None:
    """Freeze the embeddings and the lower ``n_layers`` layers; -1 freezes everything.

    When nothing below the output is trainable, the output would not require a gradient
    and spacy-transformers' backward pass would fail; a forward hook then marks the output
    as a leaf that accepts (and drops) the gradient, and training goes on (the backward
    pass then stops at the output).
    """
    layers = encoder_layers(hf_model)
    if n_layers < 0 or n_layers >= len(layers):
        frozen: list[torch.nn.Module] = [hf_model]
    else:
        embeddings = getattr(hf_model, "embeddings", None)
        if embeddings is None:
            embeddings = hf_model.get_input_embeddings()
        frozen = [embeddings, *layers[:n_layers]]
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)
    if _output_accepts_grad not in hf_model._forward_hooks.values():
        hf_model.register_forward_hook(_output_accepts_grad)


def _output_accepts_grad(module: Any, args: Any, output: Any) -> Any:
    import torch

    hidden = getattr(output, "last_hidden_state", None)
    if torch.is_grad_enabled() and hidden is not None and not hidden.requires_grad:
        hidden.requires_grad_(True)
    return output


class _ScaledOptimizer:
    """Calls the optimizer with ``lr_scale``: Thinc's optimizer supports a per-call scale
    but its PyTorch shim never passes one."""

    def __init__(self, optimizer: Any, scale: float) -> None:
        self.optimizer = optimizer
        self.scale = scale

    def __call__(self, key: Any, weights: Any, gradient: Any, *, lr_scale: float = 1.0) -> Any:
        return self.optimizer(key, weights, gradient, lr_scale=lr_scale * self.scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def _scaled_finish_update(shim: Any, optimizer: Any) -> None:
    type(shim).finish_update(shim, _ScaledOptimizer(optimizer, shim.crf_ner_lr_scale))


def scale_learn_rate(model: Model, scale: float) -> None:
    """Make every PyTorch shim of ``model`` update its weights at ``scale`` x the rate.

    The shim's ``finish_update`` is replaced on the instance (a bound method, so that a
    deep copy of the model stays bound to its own shim); calling this again only changes
    the scale.
    """
    for node in model.walk():
        for shim in node.shims:
            shim.crf_ner_lr_scale = scale
            shim.finish_update = types.MethodType(_scaled_finish_update, shim)


# --------------------------------------------------------------------------------------------
# Local model paths


@registry.callbacks("spacy_crf_ner.resolve_transformer_path.v1")
def make_resolve_transformer_path(
    component: str = "transformer", config_dir: str | None = None
) -> Callable[[Language], Language]:
    """An ``[initialize.before_init]`` callback: make a relative model path absolute.

    spacy-transformers hands the model name to ``from_pretrained``, which resolves a
    relative path from the working directory and takes any string that is not an existing
    directory for a hub id: ``../models/bert`` written next to a config then fails as a
    download (or, offline, as a malformed repo id) when ``spacy train`` runs elsewhere.
    This callback rewrites the transformer's name before it is loaded:

    * ``~`` and ``$VARS`` are expanded; an absolute path is kept;
    * a relative path is looked up in ``config_dir`` (default: the folder of the ``.cfg``
      file on the command line, as in ``spacy train configs/x.cfg``), then in the working
      directory (where a project.yml's commands run); the first that exists is used;
    * a name that is clearly a path (absolute, or starting with ``./``, ``../`` or ``~``)
      and exists nowhere raises an error naming the places tried; anything else (e.g.
      ``roberta-base``) is left to the hub.

    It runs only when ``spacy train`` (or ``nlp.initialize``) loads the model; a trained
    pipeline holds its weights and ignores the name.
    """

    def resolve_transformer_path(nlp: Language) -> Language:
        if component not in nlp.pipe_names:
            raise ValueError(
                f"[crf_ner] resolve_transformer_path: no component '{component}' in the "
                f"pipeline {nlp.pipe_names}; set its 'component' to the transformer's name."
            )
        model = nlp.get_pipe(component).model
        name = model.attrs.get("name")
        if isinstance(name, str):
            dirs = [Path(config_dir)] if config_dir else command_line_config_dirs()
            model.attrs["name"] = resolve_model_path(name, dirs)
        return nlp

    return resolve_transformer_path


def command_line_config_dirs(argv: Sequence[str] | None = None) -> list[Path]:
    """Folders of the existing ``.cfg`` files named on the command line.

    spaCy's config system does not record where a config was read from; its CLI commands
    (train, debug, assemble) take the config path as an argument, so that is where it is.
    """
    argv = sys.argv[1:] if argv is None else argv
    return [
        Path(arg).resolve().parent for arg in argv if arg.endswith(".cfg") and Path(arg).is_file()
    ]


def resolve_model_path(name: str, config_dirs: Sequence[Path]) -> str:
    """``name`` as an absolute path when it is a local one (see the callback above)."""
    expanded = os.path.expandvars(os.path.expanduser(name))
    path = Path(expanded)
    if path.is_absolute():
        if not path.exists():
            raise ValueError(f"[crf_ner] The transformer model directory {path} does not exist.")
        return str(path)
    candidates = [directory / path for directory in config_dirs] + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    if name.startswith(("./", "../", ".\\", "..\\", "~")) or name in (".", ".."):
        tried = ", ".join(str(candidate) for candidate in candidates)
        raise ValueError(
            f"[crf_ner] The transformer model path {name!r} does not exist (looked in: "
            f"{tried}). Relative paths are resolved from the config file's folder, then the "
            "working directory; pass an absolute path or a Hugging Face hub name."
        )
    return name
