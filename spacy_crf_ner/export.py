"""Export a pipeline's ``crf_ner`` to ONNX: a spaCy pipeline that runs without torch.

BiLSTM-CRF: the trained Thinc model is read layer by layer and written as one ONNX graph: the
hash-embedding tables (and the character embeddings or the character CNN), the Maxout +
LayerNorm mixing, the bidirectional LSTM (ONNX ``LSTM`` with per-sequence lengths), the emission
layer and the constrained Viterbi decode (``onnx_crf.add_viterbi``). What stays on the spaCy
side is what spaCy computes anyway: the token attributes, their hashes, the UTF-8 bytes of each
word and the hashes of its characters (``onnx_pipe.BiLSTMFeatures``).

Transformer-CRF (a spacy-transformers ``transformer`` component and crf_ner's
``TransformerListener``, alone or in ``CasedFeatures``): the Hugging Face model becomes
``transformer.onnx`` (``torch.onnx.export``), its fast tokenizer ``tokenizer.json``, and the
rest one graph like the BiLSTM's: sub-word pooling as a weighted gather, the cased features'
hash embeddings, the emission layer and the Viterbi decode (``transformer_head_model``). The
windows, the tokenisation and the word-piece alignment stay on the Python side
(``onnx_pipe.TransformerFeatures``, as spacy-transformers makes them); the exported pipeline
has no transformer component.

Two small graphs serve sentence-split decoding and entity probabilities. The new pipeline
directory is the input's, with the component replaced by ``crf_ner_onnx`` (``onnx_pipe.py``)
and its files by the graphs; ``meta.json`` names the runtime and the export settings. It is
written to a temporary directory next to ``output`` and renamed into place once it has been
loaded back and checked against the torch pipeline, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy
import srsly
from spacy.language import Language
from thinc.api import Config, Model

from .loaders import load_pipeline
from .ngrams import ngram_columns
from .onnx_crf import MIN_OPSET, GraphBuilder, add_viterbi, crf_model, masked_params
from .onnx_crf import make_model as checked_model
from .onnx_pipe import (
    CFG_FILE,
    FACTORY,
    GRAPH_FILES,
    ONNX_EXTRA_HINT,
    TRANSFORMER_FILES,
    require_onnxruntime,
)

SUPPORTED_TAGGER = "spacy_crf_ner.CRFTagger.v1"
SUPPORTED_ENCODER = "spacy_crf_ner.BiLSTMEncoder.v1"
# The transformer-CRF: a spacy-transformers listener (optionally inside CasedFeatures) whose
# word pieces are pooled by subword_pooling, over a TransformerModel with one of these spans.
LISTENER = "spacy-transformers.TransformerListener.v1"
CASED_FEATURES = "spacy_crf_ner.CasedFeatures.v1"
SUPPORTED_POOLING = "spacy_crf_ner.subword_pooling.v1"
SUPPORTED_SPANS = ("spacy-transformers.strided_spans.v1", "spacy-transformers.doc_spans.v1")
# Sentences the export is checked on, besides the pipeline's own sample of words.
CHECK_TEXTS = [
    "Angela Merkel visited New York City last May with Mr Smith of IBM.",
    "I like London and Berlin.",
    "Who is Shaka Khan?",
    "Apple bought a small startup in Paris for $ 1.5 billion on Monday , said Reuters .",
    "x",
    "Maria Lopez flew from Madrid to Toronto.\n\nThen she went home.",
]
# And one doc longer than a transformer window (128 tokens in configs/), so that the export is
# checked where strided windows overlap.
CHECK_TEXTS.append(" ".join(CHECK_TEXTS * 3))
EMISSION_TOLERANCE = 1e-4


class ExportError(ValueError):
    """A pipeline or a setting the exporter can't handle; the message names it."""


def check_onnx_available() -> None:
    """Raise ImportError naming the extra when onnx or onnxruntime is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError(f"export needs onnx and onnxruntime ({err}): {ONNX_EXTRA_HINT}") from None


def check_opset(opset: int) -> None:
    """The opset must be one that the onnx package and onnxruntime can handle."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(
            f"--opset {opset} is not supported: choose {MIN_OPSET}..{newest} (the graphs need "
            f"LayerNormalization, opset {MIN_OPSET}; onnx {onnx.__version__} knows up to {newest})"
        )


def check_output(model: str | Path, output: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``) and one that is or holds the input."""
    output = Path(output)
    source = Path(model)
    if source.exists():
        resolved, out = source.resolve(), output.resolve()
        if out == resolved or resolved in out.parents or out in resolved.parents:
            raise ExportError(
                f"output {output} would overwrite the input pipeline {model}: choose another"
            )
    if output.exists() and not overwrite:
        raise ExportError(f"output {output} exists already: choose a new path, or --overwrite")
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {output} is a file, not a pipeline directory")


def find_crf_component(nlp: Language, component: str | None) -> str:
    """The name of the ``crf_ner`` component to export (the first one by default)."""
    factories = {name: nlp.get_pipe_meta(name).factory for name in nlp.pipe_names}
    if component is not None:
        if factories.get(component) != "crf_ner":
            raise ExportError(
                f"the pipeline has no crf_ner component '{component}' (its components: "
                f"{_describe(factories)})"
            )
        return component
    for name, factory in factories.items():
        if factory == "crf_ner":
            return name
    if FACTORY in factories.values():
        raise ExportError("the pipeline was exported already (its crf_ner runs on onnxruntime)")
    raise ExportError(
        f"the pipeline has no crf_ner component (its components: {_describe(factories)})"
    )


def _describe(factories: dict[str, str]) -> str:
    return ", ".join(f"{name} ({factory})" for name, factory in factories.items()) or "none"


def check_architecture(nlp: Language, name: str) -> dict[str, Any]:
    """What the exporter needs to know of the component's architecture (else ExportError):
    ``{"kind": "bilstm"}`` or, for a transformer-CRF, ``{"kind": "transformer", ...}`` with
    the transformer component's name, its windows and the pooling."""
    model_cfg = nlp.config["components"][name]["model"]
    tagger = model_cfg.get("@architectures")
    if tagger != SUPPORTED_TAGGER:
        raise ExportError(f"architecture {tagger} of component '{name}' is not supported by export")
    encoder = model_cfg["tok2vec"].get("@architectures")
    if encoder == SUPPORTED_ENCODER:
        if model_cfg["tok2vec"].get("include_static_vectors"):
            raise ExportError(
                f"component '{name}' uses static vectors (include_static_vectors = true), which "
                "export does not support yet"
            )
        return {"kind": "bilstm"}
    listener = model_cfg["tok2vec"]
    if encoder == CASED_FEATURES:
        listener = listener["tok2vec"]
    if listener.get("@architectures") == LISTENER:
        return check_transformer(nlp, name, listener, cased=encoder == CASED_FEATURES)
    raise ExportError(
        f"encoder architecture {listener.get('@architectures')} of component '{name}' is not "
        f"supported by export (supported: {SUPPORTED_ENCODER}, or {LISTENER} alone or in "
        f"{CASED_FEATURES})"
    )


def check_transformer(
    nlp: Language, name: str, listener: dict[str, Any], *, cased: bool
) -> dict[str, Any]:
    """The transformer that ``name``'s listener reads, if the exporter can reproduce it."""
    pooling = listener.get("pooling", {})
    if pooling.get("@layers") != SUPPORTED_POOLING:
        raise ExportError(
            f"component '{name}' pools word pieces with {pooling.get('@layers')}, which export "
            f"does not support (only {SUPPORTED_POOLING}, mode first or mean)"
        )
    upstream = listener.get("upstream", "*")
    before = nlp.pipe_names[: nlp.pipe_names.index(name)]
    found = [
        other for other in before
        if nlp.get_pipe_meta(other).factory == "transformer" and upstream in ("*", other)
    ]  # fmt: skip
    if not found:
        raise ExportError(
            f"component '{name}' listens to a transformer (upstream '{upstream}') that the "
            "pipeline does not have before it"
        )
    trf_name = found[-1]
    for other in nlp.pipe_names:
        if other not in (name, trf_name) and LISTENER in str(nlp.config["components"][other]):
            raise ExportError(
                f"component '{other}' also listens to the transformer '{trf_name}': export "
                f"moves the transformer into '{name}' and can't serve other listeners"
            )
    trf_cfg = nlp.config["components"][trf_name]["model"]
    architecture = str(trf_cfg.get("@architectures"))
    if not architecture.startswith("spacy-transformers.TransformerModel."):
        raise ExportError(
            f"the transformer component '{trf_name}' has architecture {architecture}, which "
            "export does not support (only spacy-transformers.TransformerModel.v1-v3)"
        )
    spans = trf_cfg.get("get_spans", {})
    getter = spans.get("@span_getters")
    if getter not in SUPPORTED_SPANS:
        raise ExportError(
            f"the transformer component '{trf_name}' reads spans of {getter}, which export "
            f"does not support (only {' and '.join(SUPPORTED_SPANS)})"
        )
    strided = getter == SUPPORTED_SPANS[0]
    return {
        "kind": "transformer",
        "transformer": trf_name,
        "window": int(spans["window"]) if strided else None,
        "stride": int(spans["stride"]) if strided else None,
        "pooling": pooling.get("mode", "first"),
        "cased": cased,
    }


# --------------------------------------------------------------------------------------------
# Reading the Thinc model


def _nodes(model: Model, name: str) -> list[Model]:
    return [node for node in model.walk() if node.name == name]


def _one(model: Model, name: str) -> Model:
    found = _nodes(model, name)
    if len(found) != 1:
        raise ExportError(f"expected one '{name}' layer in '{model.name}', found {len(found)}")
    return found[0]


def _maxout_params(block: Model) -> dict[str, numpy.ndarray]:
    maxout, norm = _one(block, "maxout"), _one(block, "layernorm")
    n_out, n_pieces, n_in = (maxout.get_dim(d) for d in ("nO", "nP", "nI"))
    return {
        "W": numpy.asarray(maxout.get_param("W")).reshape(n_out * n_pieces, n_in).T.copy(),
        "b": numpy.asarray(maxout.get_param("b")).reshape(n_out * n_pieces),
        "pieces": numpy.asarray([n_out, n_pieces]),
        "G": numpy.asarray(norm.get_param("G")),
        "beta": numpy.asarray(norm.get_param("b")),
    }


def read_bilstm_crf(component: Any) -> dict[str, Any]:
    """Everything the graph needs from a trained BiLSTM-CRF component, as numpy arrays."""
    model = component.model
    tok2vec = model.get_ref("tok2vec")
    lstm_module, state = _lstm_state(tok2vec.get_ref("encode"))
    return {
        **_read_hash_embed(tok2vec.get_ref("embed")),
        "lstm": {
            "state": state,
            "hidden": lstm_module.hidden_size,
            "depth": lstm_module.num_layers,
        },  # fmt: skip
        "doc_context": bool(_nodes(tok2vec, "doc_context")),
        **_read_head(component),
    }


def _lstm_state(encode: Model) -> tuple[Any, dict[str, numpy.ndarray]]:
    """The ``torch.nn.LSTM`` of a ``layers.PackedBiLSTM`` and its weights as numpy arrays."""
    lstm_module = _one(encode, "pytorch").shims[0]._model.lstm
    return lstm_module, {k: v.detach().cpu().numpy() for k, v in lstm_module.state_dict().items()}


def _read_hash_embed(embed: Model) -> dict[str, Any]:
    """The tables, Maxout mixers (and character embeddings, character CNN or BiLSTM, n-gram
    tables) of a MultiHashEmbed (concatenated with a CharacterEmbed, a CharCNN or CharLSTM
    and/or an NgramEmbed)."""
    has_chars = bool(_nodes(embed, "charembed"))
    cnn_blocks = _nodes(embed, "char_cnn")
    char_lstm_blocks = _nodes(embed, "char_lstm")
    has_ngrams = bool(_nodes(embed, "ngram_features"))
    # BiLSTMEncoder concatenates [hash embeddings, CharacterEmbed?, CharCNN or CharLSTM?,
    # NgramEmbed?] in this order.
    word_blocks = [*cnn_blocks, *char_lstm_blocks]
    layers = list(embed.layers) if has_chars or word_blocks or has_ngrams else [embed]
    ngram_blocks = [layer for layer in layers if _nodes(layer, "ngram_features")]
    blocks = [layer for layer in layers if layer not in word_blocks and layer not in ngram_blocks]
    extras = [*word_blocks, *ngram_blocks]
    if (
        len(blocks) != (2 if has_chars else 1)
        or len(ngram_blocks) != int(has_ngrams)
        or layers[len(layers) - len(extras) :] != extras
    ):
        raise ExportError(f"unexpected embedding layers in '{embed.name}'")
    tables = []
    for block_index, block in enumerate(blocks):
        (extract,) = _nodes(block, "extract_features")
        block_columns = list(extract.attrs["columns"])
        for node in _nodes(block, "hashembed"):
            table = numpy.asarray(node.get_param("E"), dtype="float32")
            attr = block_columns[node.attrs["column"]]
            tables.append({"attr": attr, "seed": int(node.attrs["seed"]), "table": table,
                           "block": block_index})  # fmt: skip
    widths = {t["table"].shape[1] for t in tables}
    if len(widths) != 1:
        raise ExportError(f"hash embeddings of different widths {sorted(widths)}")
    chars = None
    if has_chars:
        char = _one(blocks[1], "charembed")
        chars = {"nC": char.get_dim("nC"), "E": numpy.asarray(char.get_param("E"), "float32")}
    return {
        "tables": tables,
        "mixers": [_maxout_params(b) for b in blocks],
        "chars": chars,
        "char_cnn": _read_char_cnn(cnn_blocks[0]) if cnn_blocks else None,
        "char_lstm": _read_char_lstm(char_lstm_blocks[0]) if char_lstm_blocks else None,
        "ngrams": _read_ngrams(ngram_blocks[0]) if ngram_blocks else None,
    }


def _read_ngrams(block: Model) -> dict[str, Any]:
    """The n-gram size and the table of each n-gram column of an ``ngrams.NgramEmbed``."""
    tables = sorted(_nodes(block, "hashembed"), key=lambda node: node.attrs["column"])
    size = int(_one(block, "ngram_features").attrs["ngram_size"])
    if [node.attrs["column"] for node in tables] != list(range(ngram_columns(size))):
        raise ExportError(f"unexpected n-gram tables in '{block.name}'")
    return {
        "size": size,
        "tables": [
            {"seed": int(node.attrs["seed"]), "table": numpy.asarray(node.get_param("E"))}
            for node in tables
        ],
    }


def _read_char_table(block: Model) -> dict[str, Any]:
    """The character table, its hash seed and the word cut of a ``chars`` word encoder."""
    table = _one(block, "hashembed")
    return {
        "E": numpy.asarray(table.get_param("E"), dtype="float32"),
        "seed": int(table.attrs["seed"]),
        "max_chars": int(block.attrs["max_chars"]),
    }


def _char_table_settings(block: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``onnx_pipe.BiLSTMFeatures`` needs to hash a word encoder's characters."""
    if block is None:
        return None
    return {"seed": block["seed"], "rows": len(block["E"]), "max_chars": block["max_chars"]}


def _read_char_cnn(cnn: Model) -> dict[str, Any]:
    """The character table, window and Maxout + LayerNorm of a ``chars.CharCNN``."""
    return {
        **_read_char_table(cnn),
        "window": int(_one(cnn, "expand_window").attrs["window_size"]),
        "mixer": _maxout_params(cnn),
    }


def _read_char_lstm(block: Model) -> dict[str, Any]:
    """The character table and the LSTM weights of a ``chars.CharLSTM``."""
    lstm_module, state = _lstm_state(block)
    return {**_read_char_table(block), "state": state, "hidden": lstm_module.hidden_size}


def _read_head(component: Any) -> dict[str, Any]:
    """The emission layer, the CRF scores and the tag constraints."""
    model = component.model
    output = model.get_ref("output_layer")
    crf = model.get_ref("crf")
    constraints = component._get_constraints()
    return {
        "output": {
            "W": numpy.asarray(output.get_param("W")).T.copy(),
            "b": numpy.asarray(output.get_param("b")),
        },  # fmt: skip
        "crf": [numpy.asarray(crf.get_param(n)) for n in ("transitions", "start", "end")],
        "constraints": None
        if constraints is None
        else tuple(c.detach().cpu().numpy() for c in constraints),
    }


def read_transformer_crf(nlp: Language, name: str, info: dict[str, Any]) -> dict[str, Any]:
    """What the graphs need from a trained transformer-CRF: the Hugging Face model and its
    fast tokenizer (from the transformer component), the cased features' tables, the head."""
    trf = nlp.get_pipe(info["transformer"]).model
    tokenizer, hf_model = trf.tokenizer, trf.transformer
    if tokenizer is None or hf_model is None:
        raise ExportError(f"the transformer component '{info['transformer']}' has no model")
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"the transformer component '{info['transformer']}' uses a slow tokenizer "
            f"({type(tokenizer).__name__}): export needs a fast one (tokenizer_config.use_fast "
            "= true, and a model that has one)"
        )
    component = nlp.get_pipe(name)
    tok2vec = component.model.get_ref("tok2vec")
    cased = _read_hash_embed(tok2vec.get_ref("embed")) if info["cased"] else {}
    if cased.get("chars"):
        raise ExportError(f"unexpected character embeddings in the cased features of '{name}'")
    max_length = getattr(tokenizer, "model_max_length", None)
    return {
        "tables": cased.get("tables", []),
        "mixers": cased.get("mixers", []),
        "chars": None,
        "width": int(hf_model.config.hidden_size),
        "hf_model": hf_model,
        "tokenizer": tokenizer,
        "max_length": int(max_length) if max_length and max_length < 10**9 else None,
        **_read_head(component),
    }


def transformer_graph(hf_model: Any, path: Path, opset: int) -> None:
    """Write the Hugging Face model as ONNX (``torch.onnx.export``): ``input_ids`` and
    ``attention_mask (W, L)`` int64 -> ``last_hidden_state (W, L, H)`` float32, with dynamic
    window and word-piece axes. ``token_type_ids`` are left to the model's default (zeros),
    which is what the tokenizer gives a single text."""
    import warnings

    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]

    was_training = hf_model.training
    hf_model.eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0
    axes = {0: "windows", 1: "pieces"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHiddenState(hf_model), (ids, mask), str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes,
                              "last_hidden_state": axes},
                opset_version=opset, dynamo=False,
            )  # fmt: skip
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(
            f"torch.onnx.export of the transformer ({type(hf_model).__name__}) failed at opset "
            f"{opset}: {first[:300]}"
        ) from None
    finally:
        hf_model.train(was_training)


# --------------------------------------------------------------------------------------------
# The graph


def _lstm_weights(state: dict[str, numpy.ndarray], layer: int) -> tuple[numpy.ndarray, ...]:
    """torch LSTM weights of one bidirectional layer in ONNX's layout and gate order.

    torch stacks the gates as (input, forget, cell, output), ONNX as (input, output, forget,
    cell); ONNX's B is the input and the recurrent bias side by side.
    """

    def reorder(w: numpy.ndarray) -> numpy.ndarray:
        i, f, c, o = numpy.split(w, 4, axis=0)
        return numpy.concatenate([i, o, f, c], axis=0)

    weights, recurrent, biases = [], [], []
    for suffix in (f"l{layer}", f"l{layer}_reverse"):
        weights.append(reorder(state[f"weight_ih_{suffix}"]))
        recurrent.append(reorder(state[f"weight_hh_{suffix}"]))
        biases.append(
            numpy.concatenate(
                [reorder(state[f"bias_ih_{suffix}"]), reorder(state[f"bias_hh_{suffix}"])]
            )
        )
    return numpy.stack(weights), numpy.stack(recurrent), numpy.stack(biases)


def _maxout(g: GraphBuilder, x: str, params: dict[str, numpy.ndarray], rank: int = 3) -> str:
    """Thinc's Maxout + LayerNorm over the last axis of a rank-``rank`` tensor."""
    n_out, n_pieces = (int(v) for v in params["pieces"])
    y = g.op("Add", [g.op("MatMul", [x, g.const(params["W"], "maxout_W", "float32")]),
                     g.const(params["b"], "maxout_b", "float32")])  # fmt: skip
    y = g.op("Reshape", [y, g.const([0] * (rank - 1) + [n_out, n_pieces], "shape", "int64")])
    y = g.reduce("ReduceMax", y, [rank])
    return g.op(
        "LayerNormalization",
        [
            y,
            g.const(params["G"], "norm_G", "float32"),
            g.const(params["beta"], "norm_b", "float32"),
        ],
        axis=-1,
        epsilon=1e-8,
    )


def _hash_inputs(weights: dict[str, Any]) -> list[Any]:
    from onnx import TensorProto, helper

    shape = ["batch", "time", len(weights["tables"]), 4]
    return [helper.make_tensor_value_info("hash_rows", TensorProto.INT64, shape)]


def _sum_hash_rows(g: GraphBuilder, table: str, rows: str, axis: int) -> str:
    """HashEmbed's vector: the sum of the ``table`` rows of the 4 keys on ``rows``'s ``axis``.
    One Gather per key, summed, so the largest intermediate is the output's size, not 4 times
    it."""
    total = None
    for key in range(4):
        index = g.op("Gather", [rows, g.const(key, "key", "int64")], axis=axis)
        vectors = g.op("Gather", [table, index], axis=0)
        total = vectors if total is None else g.op("Add", [total, vectors])
    return total


def _hash_embeddings(g: GraphBuilder, weights: dict[str, Any], inputs: list[Any]) -> str:
    """spaCy's MultiHashEmbed (and CharacterEmbed) from ``hash_rows`` (and ``char_rows``):
    the embedding tables, the Maxout + LayerNorm mixing of each block, concatenated."""
    from onnx import TensorProto, helper

    tables = weights["tables"]
    table = g.const(numpy.concatenate([t["table"] for t in tables]), "hash_tables", "float32")
    rows = _sum_hash_rows(g, table, "hash_rows", axis=3)
    blocks = []
    for block_index, mixer in enumerate(weights["mixers"]):
        members = [i for i, t in enumerate(tables) if t["block"] == block_index]
        part = g.op("Slice", [rows, g.const([members[0]], "start", "int64"),
                              g.const([members[-1] + 1], "end", "int64"),
                              g.const([2], "axes", "int64")])  # fmt: skip
        part = g.op("Reshape", [part, g.const([0, 0, -1], "shape", "int64")])
        if block_index == 1:  # CharacterEmbed: the byte embeddings come first
            chars = weights["chars"]
            n_chars, n_bytes, width = chars["E"].shape
            inputs.append(helper.make_tensor_value_info(
                "char_rows", TensorProto.INT64, ["batch", "time", n_chars]))  # fmt: skip
            table_c = g.const(chars["E"].reshape(n_chars * n_bytes, width), "char_table")
            embedded = g.op("Gather", [table_c, "char_rows"], axis=0)
            embedded = g.op("Reshape", [embedded, g.const([0, 0, -1], "shape", "int64")])
            part = g.op("Concat", [embedded, part], axis=-1)
        blocks.append(_maxout(g, part, mixer))
    if weights.get("char_cnn") is not None:
        blocks.append(_char_cnn(g, weights["char_cnn"], inputs))
    if weights.get("char_lstm") is not None:
        blocks.append(_char_lstm(g, weights["char_lstm"], inputs))
    if weights.get("ngrams") is not None:
        blocks.append(_ngram_embeddings(g, weights["ngrams"], inputs))
    return blocks[0] if len(blocks) == 1 else g.op("Concat", blocks, axis=-1)


def _ngram_embeddings(g: GraphBuilder, ngrams: dict[str, Any], inputs: list[Any]) -> str:
    """``ngrams.NgramEmbed``: ``ngram_rows (B, T, columns, 4)`` are the hash rows of each
    token's n-gram keys in the concatenated n-gram tables; the columns' vectors side by side,
    with no mixing layer, as NgramEmbed concatenates them."""
    from onnx import TensorProto, helper

    columns = len(ngrams["tables"])
    inputs.append(helper.make_tensor_value_info(
        "ngram_rows", TensorProto.INT64, ["batch", "time", columns, 4]))  # fmt: skip
    table = numpy.concatenate([t["table"] for t in ngrams["tables"]])
    rows = _sum_hash_rows(g, g.const(table, "ngram_tables", "float32"), "ngram_rows", axis=3)
    return g.op("Reshape", [rows, g.const([0, 0, -1], "shape", "int64")])


def _char_cnn(g: GraphBuilder, cnn: dict[str, Any], inputs: list[Any]) -> str:
    """``chars.CharCNN`` over the batch's distinct words, then gathered to the tokens.

    ``cnn_rows (U, C, 4)``: the hash rows of each distinct word's characters;
    ``cnn_mask (U, C, 1)``: true where the word has that character; ``cnn_index (B, T)``:
    each token's word. A batch repeats its words (the, of, ...), and every word is padded to
    the longest, so the CNN runs once per distinct word: embed, zero beyond the word (thinc's
    ``seq2col`` pads each word with zeros), the window of neighbours, Maxout + LayerNorm, and
    the maximum over the word's characters."""
    from onnx import TensorProto, helper

    inputs += [
        helper.make_tensor_value_info("cnn_rows", TensorProto.INT64, ["words", "chars", 4]),
        helper.make_tensor_value_info("cnn_mask", TensorProto.BOOL, ["words", "chars", 1]),
        helper.make_tensor_value_info("cnn_index", TensorProto.INT64, ["batch", "time"]),
    ]
    x = _sum_hash_rows(g, g.const(cnn["E"], "cnn_table", "float32"), "cnn_rows", axis=2)
    x = g.op("Where", ["cnn_mask", x, g.const(numpy.float32(0.0), "zero")])
    window = cnn["window"]
    if window:
        padded = g.op("Pad", [x, g.const([0, window, 0, 0, window, 0], "pads", "int64")])
        # seq2col's columns: the characters at offsets -window .. +window, in that order.
        shifted = []
        for offset in range(2 * window + 1):
            end = offset - 2 * window
            shifted.append(g.op("Slice", [
                padded, g.const([offset], "start", "int64"),
                g.const([end if end else numpy.iinfo("int64").max], "end", "int64"),
                g.const([1], "axes", "int64")]))  # fmt: skip
        x = g.op("Concat", shifted, axis=-1)
    y = _maxout(g, x, cnn["mixer"], rank=3)
    y = g.op("Where", ["cnn_mask", y, g.const(numpy.float32("-inf"), "neg_inf")])
    words = g.reduce("ReduceMax", y, [1])
    return g.op("Gather", [words, "cnn_index"], axis=0)


def _char_lstm(g: GraphBuilder, block: dict[str, Any], inputs: list[Any]) -> str:
    """``chars.CharLSTM`` over the batch's distinct words, then gathered to the tokens.

    ``char_lstm_rows (U, C, 4)``: the hash rows of each distinct word's characters, padded at
    the end; ``char_lstm_lengths (U,)``: its number of characters; ``char_lstm_index (B, T)``:
    each token's word. ONNX's LSTM with ``sequence_lens`` gives each direction's state after
    the word's last real character (``Y_h``), which is ``chars.final_states``."""
    from onnx import TensorProto, helper

    inputs += [
        helper.make_tensor_value_info("char_lstm_rows", TensorProto.INT64, ["words", "chars", 4]),
        helper.make_tensor_value_info("char_lstm_lengths", TensorProto.INT64, ["words"]),
        helper.make_tensor_value_info("char_lstm_index", TensorProto.INT64, ["batch", "time"]),
    ]
    x = _sum_hash_rows(g, g.const(block["E"], "char_lstm_table", "float32"), "char_lstm_rows",
                       axis=2)  # fmt: skip
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (C, U, width): ONNX LSTM is time-major
    w, r, b = _lstm_weights(block["state"], 0)
    _, final = g.op("LSTM", [x, g.const(w, "char_lstm_W", "float32"),
                             g.const(r, "char_lstm_R", "float32"),
                             g.const(b, "char_lstm_B", "float32"),
                             g.op("Cast", ["char_lstm_lengths"], to=TensorProto.INT32)],
                    n_out=2, direction="bidirectional", hidden_size=block["hidden"])  # fmt: skip
    final = g.op("Transpose", [final], perm=[1, 0, 2])  # (U, 2, H): forward, backward
    words = g.op("Reshape", [final, g.const([0, -1], "shape", "int64")])
    return g.op("Gather", [words, "char_lstm_index"], axis=0)


def _tagger_model(
    g: GraphBuilder, x: str, weights: dict[str, Any], inputs: list[Any], name: str, opset: int
) -> Any:
    """Token vectors ``x (B, T, nI)`` -> emissions -> constrained Viterbi: the model proto."""
    from onnx import TensorProto, helper

    out = weights["output"]
    num_tags = out["W"].shape[1]
    inputs += [
        helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("allowed", TensorProto.BOOL, ["batch", "time", num_tags]),
    ]
    emissions = g.op("Add", [g.op("MatMul", [x, g.const(out["W"], "output_W", "float32")]),
                             g.const(out["b"], "output_b", "float32")])  # fmt: skip
    masked = g.op("Where", ["allowed", emissions, g.const(numpy.float32("-inf"), "neg_inf")])
    trans, start, end = masked_params(*weights["crf"], weights["constraints"])
    paths, scores = add_viterbi(g, masked, "lengths", trans, start, end)
    outputs = [("emissions", emissions, TensorProto.FLOAT, ["batch", "time", num_tags]),
               ("paths", paths, TensorProto.INT64, ["batch", "time"]),
               ("scores", scores, TensorProto.DOUBLE, ["batch"])]  # fmt: skip
    for out_name, node, _, _ in outputs:
        g.nodes.append(helper.make_node("Identity", [node], [out_name]))
    graph = helper.make_graph(
        g.nodes,
        name,
        inputs,
        [helper.make_tensor_value_info(n, t, s) for n, _, t, s in outputs],
        g.initializers,
    )
    return checked_model(graph, opset)


def bilstm_crf_model(weights: dict[str, Any], opset: int) -> Any:
    """The whole BiLSTM-CRF as one ONNX graph (see ``onnx_pipe.BiLSTMFeatures`` for inputs).

    Outputs ``emissions (B, T, K)`` float32 and the Viterbi ``paths (B, T)`` / ``scores (B,)``
    of each row as one CRF sequence, under the per-token ``allowed (B, T, K)`` tags.
    """
    from onnx import TensorProto

    g = GraphBuilder(opset)
    inputs = _hash_inputs(weights)
    x = _hash_embeddings(g, weights, inputs)
    lstm = weights["lstm"]
    seq_lens = g.op("Cast", ["lengths"], to=TensorProto.INT32)
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, nI): ONNX LSTM is time-major
    for layer in range(lstm["depth"]):
        w, r, b = _lstm_weights(lstm["state"], layer)
        y = g.op("LSTM", [x, g.const(w, "lstm_W", "float32"), g.const(r, "lstm_R", "float32"),
                          g.const(b, "lstm_B", "float32"), seq_lens],
                 direction="bidirectional", hidden_size=lstm["hidden"])  # fmt: skip
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3])  # (T, B, 2, H)
        x = g.op("Reshape", [y, g.const([0, 0, -1], "shape", "int64")])
    x = g.op("Transpose", [x], perm=[1, 0, 2])
    if weights.get("doc_context"):
        x = _document_context(g, x, 2 * lstm["hidden"], inputs)
    return _tagger_model(g, x, weights, inputs, "bilstm_crf", opset)


def _document_context(g: GraphBuilder, x: str, width: int, inputs: list[Any]) -> str:
    """``context.DocumentContext``: each token's vector and the mean vector of its group.

    ``context_index (B, T)``: each token's group (the same word in the same doc; padding has
    a group of its own); ``context_scale (G, 1)``: one over each group's size. The vectors
    are summed into their group (ScatterND, reduction add), scaled, and gathered back."""
    from onnx import TensorProto, helper

    inputs += [
        helper.make_tensor_value_info("context_index", TensorProto.INT64, ["batch", "time"]),
        helper.make_tensor_value_info("context_scale", TensorProto.FLOAT, ["groups", 1]),
    ]
    flat = g.op("Reshape", [x, g.const([-1, width], "shape", "int64")])
    index = g.op("Reshape", ["context_index", g.const([-1, 1], "shape", "int64")])
    zeros = g.op("Mul", ["context_scale", g.const(numpy.zeros((1, width), "float32"), "zeros")])
    sums = g.op("ScatterND", [zeros, index, flat], reduction="add")
    means = g.op("Mul", [sums, "context_scale"])
    pooled = g.op("Gather", [means, "context_index"], axis=0)
    return g.op("Concat", [x, pooled], axis=-1)


def transformer_head_model(weights: dict[str, Any], opset: int) -> Any:
    """The transformer-CRF after the transformer, as one ONNX graph: sub-word pooling, the
    cased features (if any), the emission layer and the constrained Viterbi decode.

    Inputs: ``hidden (W, L, H)``, the transformer's word-piece vectors of the batch's windows
    (the output of ``transformer.onnx``); ``piece_index (B, T, M)``, for each token up to M
    rows of ``hidden`` flattened to ``(W * L, H)``, plus one (row 0 is a zero vector: no
    piece); ``piece_weight (B, T, M)``, their weights (1 for the first piece, 1/n for the
    mean); ``hash_rows`` as for the BiLSTM (the cased features); ``lengths`` and
    ``allowed``. A token's vector is the weighted sum of its rows
    (``transformer.subword_pooling``), then the cased features are appended.
    """
    from onnx import TensorProto, helper

    g = GraphBuilder(opset)
    width = int(weights["width"])
    inputs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["windows", "pieces", width]),
        helper.make_tensor_value_info("piece_index", TensorProto.INT64, ["batch", "time", "pool"]),
        helper.make_tensor_value_info("piece_weight", TensorProto.FLOAT,
                                      ["batch", "time", "pool"]),
    ]  # fmt: skip
    flat = g.op("Reshape", ["hidden", g.const([-1, width], "shape", "int64")])
    flat = g.op("Concat", [g.const(numpy.zeros((1, width)), "no_piece", "float32"), flat], axis=0)
    vectors = g.op("Gather", [flat, "piece_index"], axis=0)  # (B, T, M, H)
    vectors = g.op("Mul", [vectors, g.unsqueeze("piece_weight", [3])])
    x = g.reduce("ReduceSum", vectors, [2])
    if weights["tables"]:
        inputs += _hash_inputs(weights)
        x = g.op("Concat", [x, _hash_embeddings(g, weights, inputs)], axis=-1)
    return _tagger_model(g, x, weights, inputs, "transformer_crf_head", opset)


def probabilities_model(weights: dict[str, Any], opset: int) -> Any:
    """Forward-backward over given emissions (``alpha``, ``beta_emit``, ``log_z``)."""
    return crf_model(*weights["crf"], weights["constraints"], probabilities=True, opset=opset)


def decode_model(weights: dict[str, Any], opset: int) -> Any:
    """Viterbi over given emissions: for sentence rows, which are not the graph's doc rows."""
    return crf_model(*weights["crf"], weights["constraints"], opset=opset)


# --------------------------------------------------------------------------------------------
# Writing the pipeline


def quantize_int8(
    source: Path,
    target: Path,
    op_types: tuple[str, ...] = ("MatMul", "Gather", "LSTM"),
    per_channel: bool = False,
) -> None:
    """Dynamic int8 quantisation of the weight matrices and embedding tables (MatMul, Gather,
    LSTM; the transformer's MatMuls only); LayerNorm, softmax, the CRF and everything else
    stay float. ``per_channel`` gives each output column its own scale: for the transformer
    it halves the error of the hidden states at the same speed (BENCHMARKS.md §10)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a pre-processing hint at WARNING
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
        )
    finally:
        root.setLevel(level)


def export_pipeline(
    model: str | Path,
    output: str | Path,
    *,
    int8: bool = False,
    opset: int = MIN_OPSET,
    overwrite: bool = False,
    component: str | None = None,
) -> Path:
    """Write ``output``: the pipeline ``model`` with its crf_ner running on onnxruntime.

    Raises ExportError (a ValueError) for a pipeline or setting that can't be exported,
    ImportError without the ``onnx`` extra; nothing is written then.
    """
    check_onnx_available()
    check_opset(opset)
    output = Path(output)
    check_output(model, output, overwrite)
    nlp = load_pipeline(model)
    name = find_crf_component(nlp, component)
    info = check_architecture(nlp, name)
    torch_pipe = nlp.get_pipe(name)
    if not torch_pipe._is_trained():
        raise ExportError(f"component '{name}' has no trained weights")
    if info["kind"] == "transformer":
        weights = read_transformer_crf(nlp, name, info)
    else:
        weights = read_bilstm_crf(torch_pipe)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        _write(nlp, name, info, weights, tmp, int8=int8, opset=opset, source=model)
        check_export(nlp, tmp, name, exact=not int8)
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            output.rename(old / "pipeline")
            try:
                tmp.rename(output)
            except OSError:
                (old / "pipeline").rename(output)  # put the old one back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output


def _table_layout(
    tables: list[dict[str, Any]], keys: tuple[str, ...] = ("seed",)
) -> list[dict[str, Any]]:
    """How the pipe finds a token's rows in the graph's concatenation of ``tables``: each
    table's ``keys`` (its seed; the token attribute of a hash table), its number of rows and
    the offset of its first row."""
    offsets = numpy.cumsum([0] + [len(t["table"]) for t in tables])[:-1]
    return [
        {**{key: t[key] for key in keys}, "rows": len(t["table"]), "offset": int(offset)}
        for t, offset in zip(tables, offsets, strict=True)
    ]


def _write(
    nlp: Language, name: str, info: dict[str, Any], weights: dict[str, Any], path: Path, *,
    int8: bool, opset: int, source: str | Path,
) -> None:  # fmt: skip
    import onnx
    import onnxruntime

    transformer = info["kind"] == "transformer"
    nlp.to_disk(path)
    component_dir = path / name
    shutil.rmtree(component_dir)
    component_dir.mkdir()
    if transformer:
        shutil.rmtree(path / info["transformer"], ignore_errors=True)
        trf_file = component_dir / TRANSFORMER_FILES["transformer"]
        transformer_graph(weights["hf_model"], trf_file, opset)
        (component_dir / TRANSFORMER_FILES["tokenizer"]).write_text(
            weights["tokenizer"].backend_tokenizer.to_str(), encoding="utf8"
        )
        if int8:
            fp32 = trf_file.with_name(trf_file.name + ".fp32")
            trf_file.rename(fp32)
            quantize_int8(fp32, trf_file, op_types=("MatMul",), per_channel=True)
            fp32.unlink()
    try:
        graphs = {
            "model": (transformer_head_model if transformer else bilstm_crf_model)(weights, opset),
            "decode": decode_model(weights, opset),
            "probabilities": probabilities_model(weights, opset),
        }
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid graph"
        raise ExportError(f"the graphs are not valid at opset {opset}: {first[:300]}") from None
    for key, graph in graphs.items():
        onnx.save(graph, component_dir / GRAPH_FILES[key])
    if int8 and not transformer:
        fp32 = component_dir / (GRAPH_FILES["model"] + ".fp32")
        (component_dir / GRAPH_FILES["model"]).rename(fp32)
        quantize_int8(fp32, component_dir / GRAPH_FILES["model"])
        fp32.unlink()
    _check_runs(component_dir, opset, transformer=transformer)
    pipe = nlp.get_pipe(name)
    ngrams = weights.get("ngrams")
    ngram_settings = None
    if ngrams is not None:
        ngram_settings = {"size": ngrams["size"], "tables": _table_layout(ngrams["tables"])}
    settings = {
        "labels": list(pipe.labels),
        "tag_scheme": pipe.scheme.name,
        "tag_names": list(pipe.tag_names),
        "constrained": pipe.constrained,
        "features": {
            "tables": _table_layout(weights["tables"], keys=("attr", "seed")),
            "n_chars": None if weights["chars"] is None else int(weights["chars"]["nC"]),
            "char_cnn": _char_table_settings(weights.get("char_cnn")),
            "char_lstm": _char_table_settings(weights.get("char_lstm")),
            "ngrams": ngram_settings,
        },  # fmt: skip
        "crf": {
            key: value.tolist()
            for key, value in zip(
                ("transitions", "start", "end"),
                masked_params(*weights["crf"], weights["constraints"]),
                strict=True,
            )
        },  # fmt: skip
        "encoder": info["kind"],
        "doc_context": bool(weights.get("doc_context")),
    }
    if transformer:
        tokenizer = weights["tokenizer"]
        settings["transformer"] = {
            "window": info["window"],
            "stride": info["stride"],
            "pooling": info["pooling"],
            "max_length": weights["max_length"],
            "width": weights["width"],
            "pad_id": int(tokenizer.pad_token_id or 0),
            "model_type": getattr(weights["hf_model"].config, "model_type", None),
        }
    srsly.write_json(component_dir / CFG_FILE, _json_safe(settings))
    export_info = {
        "runtime": "onnxruntime",
        "component": name,
        "factory": FACTORY,
        "encoder": SUPPORTED_ENCODER if not transformer else _encoder_name(nlp, name),
        "opset": opset,
        "int8": int8,
        "onnxruntime_version": onnxruntime.__version__,
        "onnx_version": onnx.__version__,
        "source": str(source),
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if transformer:
        export_info["transformer"] = {
            "component": info["transformer"],
            "model_type": settings["transformer"]["model_type"],
            "window": info["window"],
            "stride": info["stride"],
            "pooling": info["pooling"],
            "int8": "MatMul weights, per channel" if int8 else False,
            "tokenizer": "tokenizers (tokenizer.json)",
        }
    meta = srsly.read_json(path / "meta.json")
    meta["runtime"] = "onnxruntime"
    if transformer:  # the transformer now runs inside crf_ner
        for key in ("pipeline", "components"):
            if isinstance(meta.get(key), list):
                meta[key] = [c for c in meta[key] if c != info["transformer"]]
        meta["requirements"] = [
            r for r in meta.get("requirements", []) if not r.startswith("spacy-transformers")
        ]
        import tokenizers

        meta["requirements"].append(f"tokenizers>={tokenizers.__version__}")
    meta["spacy_crf_ner_export"] = export_info
    meta["requirements"] = sorted(
        {*meta.get("requirements", []), f"onnxruntime>={onnxruntime.__version__}"}
    )
    srsly.write_json(path / "meta.json", meta)
    config = Config().from_disk(path / "config.cfg", interpolate=False)
    if transformer:
        trf_name = info["transformer"]
        del config["components"][trf_name]
        for key in ("pipeline", "disabled"):
            config["nlp"][key] = [c for c in config["nlp"].get(key, []) if c != trf_name]
        for key in ("frozen_components", "annotating_components"):
            if key in config.get("training", {}):
                config["training"][key] = [c for c in config["training"][key] if c != trf_name]
    old = config["components"][name]
    config["components"][name] = {
        "factory": FACTORY,
        "respect_sentences": old.get("respect_sentences", True),
        "entity_probs": old.get("entity_probs", False),
        "spans_key": old.get("spans_key", "crf_ner"),
        "candidate_threshold": old.get("candidate_threshold"),
        "max_candidate_length": old.get("max_candidate_length", 10),
        "temperature": old.get("temperature", 1.0),
        "scorer": {"@scorers": "spacy_crf_ner.entity_scorer.v1"},
    }
    config.to_disk(path / "config.cfg", interpolate=False)


def _json_safe(value: Any) -> Any:
    """-inf scores as the string "-inf" (JSON has no infinities)."""
    if isinstance(value, float) and value == float("-inf"):
        return "-inf"
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _encoder_name(nlp: Language, name: str) -> str:
    tok2vec = nlp.config["components"][name]["model"]["tok2vec"]
    if tok2vec.get("@architectures") == CASED_FEATURES:
        return f"{CASED_FEATURES} over {LISTENER}"
    return LISTENER


def _check_runs(component_dir: Path, opset: int, *, transformer: bool = False) -> None:
    """Every graph must load in this onnxruntime (e.g. an opset it does not implement)."""
    onnxruntime = require_onnxruntime()
    files = [*GRAPH_FILES.values(), *([TRANSFORMER_FILES["transformer"]] if transformer else [])]
    for file in files:
        try:
            onnxruntime.InferenceSession(
                str(component_dir / file), providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(
                f"onnxruntime {onnxruntime.__version__} cannot run the graph at opset {opset}: "
                f"{first[:300]}"
            ) from None


def check_export(nlp: Language, path: Path, name: str, *, exact: bool) -> None:
    """Load the written pipeline and compare it with the torch one on a few texts: the same
    emissions (to ``EMISSION_TOLERANCE``) and entities; int8 (``exact=False``) must load and
    tag."""
    import spacy

    exported = spacy.load(path)
    texts = CHECK_TEXTS
    docs = [nlp.make_doc(t) for t in texts]
    for other, proc in nlp.pipeline:  # e.g. the transformer, which crf_ner listens to
        if other == name:
            break
        docs = list(proc.pipe(docs))
    torch_pipe, onnx_pipe = nlp.get_pipe(name), exported.get_pipe(name)
    theirs = onnx_pipe.emissions([exported.make_doc(t) for t in texts])
    if exact:
        ours = torch_pipe.model.predict(docs)
        worst = max(float(numpy.abs(numpy.asarray(a) - b).max()) for a, b in
                    zip(ours, theirs, strict=True) if len(a))  # fmt: skip
        if worst > EMISSION_TOLERANCE:
            raise ExportError(
                f"the exported graph's emissions differ from the torch model's by {worst:.2g} "
                f"(more than {EMISSION_TOLERANCE}); please report this with the pipeline's config"
            )
        expected = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
        got = [[(e.start, e.end, e.label_) for e in d.ents] for d in exported.pipe(texts)]
        if expected != got:
            _check_tied_paths(torch_pipe, onnx_pipe, docs, ours, worst)
    else:
        list(exported.pipe(texts))


CRF_KEYS = ("transitions", "start", "end")


def _check_tied_paths(
    torch_pipe: Any, onnx_pipe: Any, docs: list, emissions: list, worst: float
) -> None:
    """Where the two pipelines' entities differ, the exported tag path must still be a best
    path under the torch model's emissions: its score may fall short of the torch path's by
    no more than emission differences of ``worst`` can explain (2 x tokens x worst). Exact
    ties happen, e.g. with an untrained model on repeated [UNK] word pieces, and float32
    differences of 1e-6 break them either way."""
    expected = torch_pipe.decode(docs, emissions, scored=False)
    got = onnx_pipe.predict(docs)[0]
    crf = torch_pipe.model.get_ref("crf")
    trans, start, end = (numpy.asarray(crf.get_param(key), dtype="float64") for key in CRF_KEYS)
    for doc, scores, a, b in zip(docs, emissions, expected, got, strict=True):
        a, b = numpy.asarray(a), numpy.asarray(b)
        if numpy.array_equal(a, b):
            continue
        scores = numpy.asarray(scores, dtype="float64")
        for first, stop in onnx_pipe._doc_sequences(doc):
            steps = numpy.arange(first, stop)
            total = [
                start[path[0]] + end[path[-1]] + scores[steps, path].sum()
                + trans[path[:-1], path[1:]].sum()
                for path in (a[first:stop], b[first:stop])
            ]  # fmt: skip
            if total[0] - total[1] > 2 * (stop - first) * worst + 1e-6:
                raise ExportError(
                    "the exported pipeline's entities differ from the torch pipeline's (its "
                    f"best path scores {total[0] - total[1]:.3g} less); please report this "
                    "with the pipeline's config"
                )


__all__ = ["ExportError", "export_pipeline"]
