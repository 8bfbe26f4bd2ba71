"""``crf_ner_onnx``: the ``crf_ner`` of an exported pipeline, running on onnxruntime.

``python -m spacy_crf_ner export`` (``export.py``) writes a pipeline whose crf_ner is this
component: the BiLSTM-CRF is one ONNX graph from the hash-embedding rows to the constrained
Viterbi paths, and spaCy only computes what it computes for the torch model too, the token
attributes, their hashes (``thinc``'s ``NumpyOps.hash``, as ``HashEmbed`` does) and the UTF-8
bytes of each word (``BiLSTMFeatures``). A transformer-CRF has a second graph, the
transformer, and ``TransformerFeatures`` makes its inputs as spacy-transformers does (windows,
the ``tokenizers`` fast tokenizer, word-piece alignment). Nothing here imports torch (or
transformers), so ``spacy.load`` works where torch is not installed. Two small graphs decode
sentence rows (``respect_sentences``) and give the forward and backward vectors from which
the entity probabilities are read (``span_probabilities``, the numpy form of
``crf.SpanPosteriors``).

The component predicts only; it refuses a torch crf_ner directory and the torch component
refuses its files (``pipe.py``). onnxruntime runs on one thread per process by default (as
crf_ner's torch prediction does; ``SPACY_CRF_NER_THREADS`` sets another number).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy
import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.util import minibatch

from .tags import get_scheme
from .threads import inference_threads

FACTORY = "crf_ner_onnx"
CFG_FILE = "cfg"
GRAPH_FILES = {"model": "model.onnx", "decode": "crf.onnx", "probabilities": "crf_probs.onnx"}
# A transformer-CRF also has the transformer's graph and its tokenizer (``tokenizers``' JSON).
TRANSFORMER_FILES = {"transformer": "transformer.onnx", "tokenizer": "tokenizer.json"}
# Windows per transformer call (sorted by length, so that little padding is computed).
WINDOWS_PER_CALL = 32
ONNX_EXTRA_HINT = 'install the onnx extra: pip install "spacy-crf-ner[onnx]"'
# Docs per graph call: sorted by length and cut into groups of at most this many rows, each
# with at most PADDING_SHARE of padding (the LSTM pays for padding; the CRF loop pays per step
# of each group, whatever its number of rows).
ROWS_PER_CALL = 128
PADDING_SHARE = 0.25
# At most this many padded tokens per call (unless one doc is longer): bounds the memory of
# the graph's intermediates (a few kB per token for the BiLSTM-CRF of configs/).
TOKENS_PER_CALL = 16384

if not Span.has_extension("crf_prob"):
    Span.set_extension("crf_prob", default=None)
if not Doc.has_extension("crf_path_prob"):
    Doc.set_extension("crf_path_prob", default=None)


def require_onnxruntime() -> Any:
    """onnxruntime, or an ImportError that names the extra to install."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"[crf_ner_onnx] this pipeline runs on onnxruntime, which can't be imported ({err}): "
            f"{ONNX_EXTRA_HINT}"
        ) from None
    return onnxruntime


@Language.factory(
    FACTORY,
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "respect_sentences": True,
        "entity_probs": False,
        "spans_key": "crf_ner",
        "candidate_threshold": None,
        "max_candidate_length": 10,
        "temperature": 1.0,
        "scorer": {"@scorers": "spacy_crf_ner.entity_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_crf_ner_onnx(
    nlp: Language,
    name: str,
    respect_sentences: bool = True,
    entity_probs: bool = False,
    spans_key: str = "crf_ner",
    candidate_threshold: float | None = None,
    max_candidate_length: int = 10,
    temperature: float = 1.0,
    scorer: Callable | None = None,
) -> OnnxCRFEntityRecognizer:
    """An exported crf_ner (see ``make_crf_ner`` for the settings; the model, the labels,
    the tag scheme and ``constrained`` are fixed by the export)."""
    return OnnxCRFEntityRecognizer(
        name,
        respect_sentences=respect_sentences,
        entity_probs=entity_probs,
        spans_key=spans_key,
        candidate_threshold=candidate_threshold,
        max_candidate_length=max_candidate_length,
        temperature=temperature,
        scorer=scorer,
    )


def ragged_positions(lengths: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """For items laid out back to back in segments of ``lengths``: each item's segment and
    its position within it."""
    segment = numpy.repeat(numpy.arange(len(lengths)), lengths)
    position = numpy.arange(int(lengths.sum())) - numpy.repeat(
        numpy.cumsum(lengths) - lengths, lengths
    )
    return segment, position


class BiLSTMFeatures:
    """The graph's inputs for a batch of docs: hash-embedding rows and character bytes.

    ``tables`` (from the export) lists each hash table's token attribute, seed, number of rows
    and offset in the graph's concatenated table; a token's row keys are Thinc's
    ``NumpyOps.hash(attr, seed) % rows`` (4 keys each), plus the offset. ``char_cnn`` (seed,
    rows, max_chars) adds the character CNN's inputs, ``char_lstm`` (the same) the character
    BiLSTM's; ``ngrams`` (size, and each column's seed, rows and offset) the n-gram
    embeddings' (``ngrams.ngram_keys``, hashed the same way).
    """

    def __init__(
        self,
        tables: list[dict[str, Any]],
        n_chars: int | None,
        char_cnn: dict[str, Any] | None = None,
        ngrams: dict[str, Any] | None = None,
        char_lstm: dict[str, Any] | None = None,
    ) -> None:
        from thinc.api import NumpyOps

        self.ops = NumpyOps()
        self.tables = tables
        self.attrs = list(dict.fromkeys(t["attr"] for t in tables))
        self.n_chars = n_chars
        self.char_cnn = char_cnn
        self.char_lstm = char_lstm
        self.ngrams = ngrams

    def __call__(self, docs: list[Doc], width: int) -> dict[str, numpy.ndarray]:
        batch = len(docs)
        rows = numpy.zeros((batch, width, len(self.tables), 4), dtype="int64")
        chars = numpy.zeros((batch, width, self.n_chars or 0), dtype="int64")
        char_offsets = 256 * numpy.arange(self.n_chars or 0)
        for b, doc in enumerate(docs):
            values = doc.to_array(self.attrs).reshape(len(doc), len(self.attrs))
            values = numpy.ascontiguousarray(values, dtype="uint64")
            for h, table in enumerate(self.tables):
                column = values[:, self.attrs.index(table["attr"])]
                rows[b, : len(doc), h] = self._table_rows(column, table)
            if self.n_chars:
                chars[b, : len(doc)] = doc.to_utf8_array(nr_char=self.n_chars) + char_offsets
        inputs = {"hash_rows": rows}
        if self.n_chars:
            inputs["char_rows"] = chars
        if self.char_cnn:
            inputs.update(self._char_cnn_inputs(docs, width))
        if self.char_lstm:
            inputs.update(self._char_lstm_inputs(docs, width))
        if self.ngrams:
            inputs["ngram_rows"] = self._ngram_rows(docs, width)
        return inputs

    def _ngram_rows(self, docs: list[Doc], width: int) -> numpy.ndarray:
        """``(B, T, columns, 4)``: the rows of each token's n-gram keys in the graph's
        concatenated n-gram tables (``export._ngram_embeddings``)."""
        from .ngrams import ngram_keys

        tables = self.ngrams["tables"]
        rows = numpy.zeros((len(docs), width, len(tables), 4), dtype="int64")
        for b, doc in enumerate(docs):
            keys = ngram_keys(doc, self.ngrams["size"])
            for column, table in enumerate(tables):
                rows[b, : len(doc), column] = self._table_rows(keys[:, column], table)
        return rows

    def _table_rows(self, keys: numpy.ndarray, table: dict[str, Any]) -> numpy.ndarray:
        """``(n, 4)``: the rows of uint64 ``keys`` in the graph's concatenated tables, as
        Thinc's ``HashEmbed`` finds them (``NumpyOps.hash(keys, seed) % rows``) plus the
        table's offset."""
        hashed = self.ops.hash(numpy.ascontiguousarray(keys), table["seed"]) % table["rows"]
        return hashed.astype("int64") + table["offset"]

    def _char_cnn_inputs(self, docs: list[Doc], width: int) -> dict[str, numpy.ndarray]:
        """The batch's distinct words for the character CNN (``export._char_cnn``):
        ``cnn_rows (U, C, 4)``, the hash rows of each word's characters (Unicode code points,
        as ``chars.CharCNN`` reads them, cut at ``max_chars``); ``cnn_mask (U, C, 1)``, which
        are real; ``cnn_index (B, T)``, each token's word (padding: word 0)."""
        rows, lengths, index = self._word_chars(docs, width, self.char_cnn)
        mask = numpy.arange(rows.shape[1]) < lengths[:, None]
        return {"cnn_rows": rows, "cnn_mask": mask[:, :, None], "cnn_index": index}

    def _char_lstm_inputs(self, docs: list[Doc], width: int) -> dict[str, numpy.ndarray]:
        """The same for the character BiLSTM (``export._char_lstm``): ``char_lstm_rows``,
        ``char_lstm_lengths (U,)`` and ``char_lstm_index``."""
        rows, lengths, index = self._word_chars(docs, width, self.char_lstm)
        return {"char_lstm_rows": rows, "char_lstm_lengths": lengths,
                "char_lstm_index": index}  # fmt: skip

    def _word_chars(
        self, docs: list[Doc], width: int, settings: dict[str, Any]
    ) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """The batch's distinct words (``chars.distinct_words``): the hash rows of each
        word's characters ``(U, C, 4)``, padded with row 0; each word's number of characters
        ``(U,)``; and each token's word ``(B, T)`` (padding: word 0)."""
        from .chars import distinct_words, word_codes

        words, token_word = distinct_words(docs, settings["max_chars"])
        index = numpy.zeros((len(docs), width), dtype="int64")
        doc_ids, positions = ragged_positions(
            numpy.asarray([len(doc) for doc in docs], dtype="int64")
        )
        index[doc_ids, positions] = token_word
        words = words or [" "]
        codes, lengths = word_codes(words)
        codes = numpy.ascontiguousarray(codes[:, 0])
        keys = self.ops.hash(codes, settings["seed"]) % settings["rows"]
        word_ids, positions = ragged_positions(lengths)
        rows = numpy.zeros((len(words), int(lengths.max()), 4), dtype="int64")
        rows[word_ids, positions] = keys.astype("int64")
        return rows, lengths.astype("int64"), index


def document_context_inputs(docs: list[Doc], width: int) -> dict[str, numpy.ndarray]:
    """``context_index (B, T)``: each token's group (``context.occurrence_groups``; padding
    is one more group) and ``context_scale (G + 1, 1)``: one over each group's size, for
    ``export._document_context``."""
    from .context import occurrence_groups

    groups, counts = occurrence_groups(docs)
    padding = len(counts)
    index = numpy.full((len(docs), width), padding, dtype="int64")
    doc_ids, positions = ragged_positions(numpy.asarray([len(doc) for doc in docs], dtype="int64"))
    index[doc_ids, positions] = groups
    scale = numpy.append(1.0 / counts, 1.0).astype("float32").reshape(-1, 1)
    return {"context_index": index, "context_scale": scale}


def strided_windows(n_tokens: int, window: int | None, stride: int | None) -> list[tuple]:
    """The token ranges of spacy-transformers' ``strided_spans.v1`` (``get_strided_spans``),
    or the whole doc (``doc_spans.v1``, ``window`` None)."""
    if window is None or stride is None:
        return [(0, n_tokens)] if n_tokens else []
    spans = []
    start = 0
    for _ in range(n_tokens // stride):
        spans.append((start, min(start + window, n_tokens)))
        if start + window >= n_tokens:
            break
        start += stride
    else:
        if start < n_tokens:
            spans.append((start, n_tokens))
    return spans


class TransformerFeatures:
    """The transformer-CRF's inputs for a batch of docs, as spacy-transformers makes them.

    Each doc is cut into windows of spaCy tokens (``strided_windows``); each window's text is
    tokenised by the Hugging Face fast tokenizer (the ``tokenizers`` package, from the
    exported ``tokenizer.json``) with its special tokens, and cut at the model's maximum
    length (``truncate_oversize_splits``); the transformer graph gives the word-piece
    vectors. A word piece belongs to every token whose characters, or the one character
    after them, it covers (``align.get_span2wp_from_offset_mapping``); a token in two
    windows has pieces in both. The pooling (``transformer.subword_pooling``) takes the
    token's first piece in window order, or the mean of all; that is ``piece_index`` and
    ``piece_weight`` for the head graph.
    """

    def __init__(self, settings: dict[str, Any], tokenizer_json: bytes) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf8"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.window, self.stride = settings["window"], settings["stride"]
        self.max_length = settings["max_length"]
        self.mode = settings["pooling"]
        self.width = int(settings["width"])
        self.pad_id = int(settings["pad_id"])

    def __call__(self, docs: list[Doc], width: int, run: Callable) -> dict[str, numpy.ndarray]:
        """Inputs ``hidden``, ``piece_index`` and ``piece_weight`` of the head graph for
        ``docs`` (padded to ``width`` tokens); ``run(ids, mask)`` runs the transformer."""
        windows = []  # (row, start token, end token)
        texts = []
        for b, doc in enumerate(docs):
            for start, end in strided_windows(len(doc), self.window, self.stride):
                windows.append((b, start, end))
                texts.append(doc[start:end].text)
        encodings = self.tokenizer.encode_batch(texts) if texts else []
        limit = self.max_length or max((len(e.ids) for e in encodings), default=0)
        ids = [numpy.asarray(e.ids[:limit], dtype="int64") for e in encodings]
        n_pieces = max((len(i) for i in ids), default=0)
        hidden = self._transformer(ids, n_pieces, run)
        # (row, token, flat piece index) of every aligned pair
        rows, tokens, flat = [], [], []
        starts = [numpy.asarray([t.idx for t in doc], dtype="int64") for doc in docs]
        for w, ((b, start, end), encoding) in enumerate(zip(windows, encodings, strict=True)):
            offsets = numpy.asarray(encoding.offsets[:limit], dtype="int64").reshape(-1, 2)
            token_start = starts[b][start:end] - starts[b][start]
            token_end = token_start + numpy.asarray([len(t) for t in docs[b][start:end]]) + 1
            sizes = numpy.maximum(offsets[:, 1] - offsets[:, 0], 0)
            piece, chars = ragged_positions(sizes)
            chars += numpy.repeat(offsets[:, 0], sizes)
            # The last token that starts at or before each character (a later token's range
            # overwrites an earlier one's trailing character, as in spacy-transformers).
            owner = numpy.searchsorted(token_start, chars, side="right") - 1
            keep = (owner >= 0) & (chars < token_end[numpy.maximum(owner, 0)])
            pairs = numpy.unique(numpy.stack([owner[keep], piece[keep]], axis=1), axis=0)
            rows.append(numpy.full(len(pairs), b))
            tokens.append(pairs[:, 0] + start)
            flat.append(w * n_pieces + pairs[:, 1])
        piece_index = numpy.zeros((len(docs), width, 1), dtype="int64")
        piece_weight = numpy.zeros((len(docs), width, 1), dtype="float32")
        if flat:
            rows_a, tokens_a, flat_a = (numpy.concatenate(x) for x in (rows, tokens, flat))
            order = numpy.lexsort((flat_a, tokens_a, rows_a))
            rows_a, tokens_a, flat_a = rows_a[order], tokens_a[order], flat_a[order]
            key = rows_a * width + tokens_a
            new = numpy.ones(len(key), dtype=bool)
            new[1:] = key[1:] != key[:-1]
            if self.mode == "first":
                piece_index[rows_a[new], tokens_a[new], 0] = flat_a[new] + 1
                piece_weight[rows_a[new], tokens_a[new], 0] = 1.0
            else:
                group_start = numpy.flatnonzero(new)
                counts = numpy.diff(numpy.append(group_start, len(key)))
                rank = numpy.arange(len(key)) - numpy.repeat(group_start, counts)
                piece_index = numpy.zeros((len(docs), width, counts.max()), dtype="int64")
                piece_weight = numpy.zeros(piece_index.shape, dtype="float32")
                piece_index[rows_a, tokens_a, rank] = flat_a + 1
                piece_weight[rows_a, tokens_a, rank] = numpy.repeat(
                    (1.0 / counts).astype("float32"), counts
                )
        return {"hidden": hidden, "piece_index": piece_index, "piece_weight": piece_weight}

    def _transformer(self, ids: list[numpy.ndarray], n_pieces: int, run: Callable):
        """Word-piece vectors ``(W, n_pieces, H)`` of the windows, computed in groups of
        similar length (the vectors of a window don't depend on its group's padding)."""
        hidden = numpy.zeros((len(ids), n_pieces, self.width), dtype="float32")
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for first in range(0, len(order), WINDOWS_PER_CALL):
            group = order[first : first + WINDOWS_PER_CALL]
            longest = max(len(ids[i]) for i in group)
            batch = numpy.full((len(group), longest), self.pad_id, dtype="int64")
            mask = numpy.zeros((len(group), longest), dtype="int64")
            for row, i in enumerate(group):
                batch[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            out = run(batch, mask)
            for row, i in enumerate(group):
                hidden[i, : len(ids[i])] = out[row, : len(ids[i])]
        return hidden


class OnnxCRFEntityRecognizer(Pipe):
    """Named entities from an exported CRF tagger, decoded by the graph's constrained Viterbi."""

    def __init__(
        self,
        name: str = "crf_ner",
        *,
        respect_sentences: bool = True,
        entity_probs: bool = False,
        spans_key: str = "crf_ner",
        candidate_threshold: float | None = None,
        max_candidate_length: int = 10,
        temperature: float = 1.0,
        scorer: Callable | None = None,
    ) -> None:
        self.name = name
        self.respect_sentences = bool(respect_sentences)
        self.entity_probs = bool(entity_probs)
        self.spans_key = spans_key
        if candidate_threshold is not None and not 0.0 < candidate_threshold <= 1.0:
            raise ValueError(
                f"[crf_ner_onnx] candidate_threshold of component '{name}' must be in (0, 1] "
                f"or null; got {candidate_threshold!r}"
            )
        self.candidate_threshold = candidate_threshold
        self.max_candidate_length = int(max_candidate_length)
        if not temperature > 0.0:
            raise ValueError(
                f"[crf_ner_onnx] temperature of component '{name}' must be positive; got "
                f"{temperature!r}"
            )
        self.temperature = float(temperature)
        self.scorer = scorer
        self.cfg: dict[str, Any] = {"labels": []}
        self._settings: dict[str, Any] = {}
        self._files: dict[str, bytes] = {}
        self._sessions: dict[str, Any] = {}
        self._featurizer: BiLSTMFeatures | None = None
        self._transformer: TransformerFeatures | None = None
        self._pid = os.getpid()

    # ------------------------------------------------------------------ labels and tags
    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._settings.get("labels", ()))

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(self._settings.get("tag_names", ()))

    @property
    def scheme(self) -> Any:
        return get_scheme(self._settings["tag_scheme"])

    # ------------------------------------------------------------------ running
    def _session(self, key: str) -> Any:
        """The onnxruntime session of a graph, made on first use in each process (a forked
        worker makes its own)."""
        if self._pid != os.getpid():
            self._sessions, self._pid = {}, os.getpid()
        if key not in self._sessions:
            if not self._files:
                raise ValueError(
                    f"[crf_ner_onnx] component '{self.name}' has no model: load an exported "
                    "pipeline (spacy.load) rather than adding the component to a pipeline"
                )
            onnxruntime = require_onnxruntime()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = inference_threads()
            options.inter_op_num_threads = 1
            file = GRAPH_FILES.get(key) or TRANSFORMER_FILES[key]
            self._sessions[key] = onnxruntime.InferenceSession(
                self._files[file], options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size):
            self.set_annotations(docs, self.predict(docs))
            yield from docs

    def emissions(self, docs: list[Doc]) -> list[numpy.ndarray]:
        """Per-token tag scores ``(len(doc), K)`` of each doc (what the torch model predicts)."""
        out = [numpy.zeros((len(doc), len(self.tag_names)), "float32") for doc in docs]
        for indices, result in self._run_model(docs, self._allowed_tags(docs)):
            for row, i in enumerate(indices):
                out[i] = result["emissions"][row, : len(docs[i])]
        return out

    def _run_model(
        self, docs: list[Doc], allowed: list[numpy.ndarray | None]
    ) -> Iterator[tuple[list[int], dict[str, Any]]]:
        """The model graph over the non-empty docs, in groups of similar length."""
        order = sorted((i for i, doc in enumerate(docs) if len(doc)), key=lambda i: len(docs[i]))
        session = self._session("model")
        names = [o.name for o in session.get_outputs()]
        for indices in _length_groups(order, [len(doc) for doc in docs]):
            group = [docs[i] for i in indices]
            width = max(len(doc) for doc in group)
            inputs = self._features(group, width)
            inputs["lengths"] = numpy.asarray([len(doc) for doc in group], dtype="int64")
            mask = numpy.ones((len(group), width, len(self.tag_names)), dtype=bool)
            for row, i in enumerate(indices):
                if allowed[i] is not None:
                    mask[row, : len(docs[i])] = allowed[i]
            inputs["allowed"] = mask
            yield indices, dict(zip(names, session.run(None, inputs), strict=True))

    def predict(self, docs: Iterable[Doc]) -> Any:
        """Tag ids per doc; with probabilities on, also what ``set_annotations`` writes."""
        docs = list(docs)
        n_tags = len(self.tag_names)
        paths = [numpy.zeros((len(doc),), dtype="int64") for doc in docs]
        emissions = [numpy.zeros((len(doc), n_tags), "float32") for doc in docs]
        scored = self.entity_probs or self.candidate_threshold is not None
        rows = self._rows(docs)  # (doc, start, length) of each CRF sequence
        split = len(rows) != sum(1 for doc in docs if len(doc))
        allowed = self._allowed_tags(docs)
        for indices, result in self._run_model(docs, allowed):
            for row, i in enumerate(indices):
                n = len(docs[i])
                emissions[i] = result["emissions"][row, :n]
                paths[i] = result["paths"][row, :n].copy()
        if not rows or not (split or scored):
            return paths, None
        # Sentence rows (or probabilities): decode the CRF sequences themselves.
        padded = self._padded_rows(docs, rows, emissions, allowed)
        lengths = numpy.asarray([length for _, _, length in rows], dtype="int64")
        row_paths, row_scores = self._session("decode").run(
            None, {"emissions": padded, "lengths": lengths}
        )
        for r, (i, start, length) in enumerate(rows):
            paths[i][start : start + length] = row_paths[r, :length]
        if not scored:
            return paths, None
        alpha, beta_emit, log_z = self._session("probabilities").run(
            None,
            {"emissions": padded, "lengths": lengths,
             "temperature": numpy.asarray(self.temperature, dtype="float64")},
        )  # fmt: skip
        posteriors = Posteriors(
            alpha, beta_emit, padded.astype("float64") / self.temperature, lengths, log_z,
            *(self._crf_param(key) / self.temperature for key in ("transitions", "start", "end")),
        )  # fmt: skip
        return paths, self._probabilities(docs, rows, row_paths, row_scores, posteriors)

    def _crf_param(self, key: str) -> numpy.ndarray:
        value = self._settings["crf"][key]
        return numpy.asarray(_from_json(value), dtype="float64")

    def _features(self, docs: list[Doc], width: int) -> dict[str, numpy.ndarray]:
        if self._featurizer is None:
            features = self._settings["features"]
            self._featurizer = BiLSTMFeatures(
                features["tables"],
                features["n_chars"],
                features.get("char_cnn"),
                features.get("ngrams"),
                features.get("char_lstm"),
            )
        inputs = self._featurizer(docs, width) if self._settings["features"]["tables"] else {}
        if self._settings.get("doc_context"):
            inputs.update(document_context_inputs(docs, width))
        if self._settings.get("encoder") == "transformer":
            if self._transformer is None:
                self._transformer = TransformerFeatures(
                    self._settings["transformer"], self._files[TRANSFORMER_FILES["tokenizer"]]
                )
            session = self._session("transformer")

            def run(ids: numpy.ndarray, mask: numpy.ndarray) -> numpy.ndarray:
                return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

            inputs.update(self._transformer(docs, width, run))
        return inputs

    def _rows(self, docs: list[Doc]) -> list[tuple[int, int, int]]:
        rows = []
        for i, doc in enumerate(docs):
            for start, end in self._doc_sequences(doc):
                rows.append((i, start, end - start))
        return rows

    def _doc_sequences(self, doc: Doc) -> list[tuple[int, int]]:
        """The token ranges that are separate CRF sequences (sentences, as in crf_ner)."""
        n = len(doc)
        if n == 0:
            return []
        if not (self.respect_sentences and doc.has_annotation("SENT_START")):
            return [(0, n)]
        starts = [int(i) for i in numpy.flatnonzero(doc.to_array("SENT_START") == 1) if i > 0]
        bounds = [0, *starts, n]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    @staticmethod
    def _padded_rows(docs, rows, emissions, allowed) -> numpy.ndarray:
        width = max(length for _, _, length in rows)
        n_tags = emissions[rows[0][0]].shape[1]
        padded = numpy.zeros((len(rows), width, n_tags), dtype="float32")
        for r, (i, start, length) in enumerate(rows):
            values = emissions[i][start : start + length]
            if allowed[i] is not None:
                values = numpy.where(allowed[i][start : start + length], values, -numpy.inf)
            padded[r, :length] = values
        return padded

    def _allowed_tags(self, docs: list[Doc]) -> list[numpy.ndarray | None]:
        """Per doc, the tags each token may take (no entity edge on whitespace, as crf_ner's
        ``_allowed_tags``), or None where every tag is allowed."""
        names = self.tag_names
        on_space = numpy.asarray([name == "O" for name in names])
        if self._settings.get("constrained", True):
            for label in self.labels:
                _, inside, last = self.scheme.spans_to_tags([(0, 3, label)], 3)
                if inside != last:
                    on_space |= numpy.asarray([name == inside for name in names])
        out: list[numpy.ndarray | None] = []
        for doc in docs:
            space = doc.to_array("IS_SPACE").astype(bool) if len(doc) else numpy.zeros(0, bool)
            out.append(~space[:, None] | on_space[None, :] if space.any() else None)
        return out

    def _probabilities(self, docs, rows, row_paths, row_scores, posteriors) -> dict[str, Any]:
        tag_names, scheme = self.tag_names, self.scheme
        entities = []
        for r, (_, _, length) in enumerate(rows):
            tags = [tag_names[int(t)] for t in row_paths[r, :length]]
            entities.extend(
                (r, s, e, lab) for s, e, lab in scheme.tags_to_spans(tags, strict=False)
            )
        probs = span_probabilities(posteriors, scheme, tag_names, entities)
        with numpy.errstate(over="ignore", invalid="ignore"):
            path_probs = numpy.exp(row_scores / self.temperature - posteriors.log_z)
        entity_probs: list[dict] = [{} for _ in docs]
        path_prob = [1.0] * len(docs)
        for r, (i, _, _) in enumerate(rows):
            path_prob[i] *= float(path_probs[r])
        for (r, s, e, label), p in zip(entities, probs, strict=True):
            i, start, _ = rows[r]
            entity_probs[i][(start + s, start + e, label)] = float(p)
        candidates: list[list] = [[] for _ in docs]
        if self.candidate_threshold is not None:
            for r, s, e, label, p in candidate_probabilities(
                posteriors, scheme, tag_names, self.labels, self.max_candidate_length,
                self.candidate_threshold,
            ):  # fmt: skip
                i, start, _ = rows[r]
                candidates[i].append((start + s, start + e, label, p))
        return {"entity_probs": entity_probs, "path_probs": path_prob, "candidates": candidates}

    def set_annotations(self, docs: Iterable[Doc], predictions: Any) -> None:
        """Write ``Doc.ents`` (and the probabilities, as crf_ner does)."""
        paths, scored = predictions
        tag_names, scheme = self.tag_names, self.scheme
        for d, (doc, ids) in enumerate(zip(docs, paths, strict=True)):
            ents = []
            for start, end in self._doc_sequences(doc):
                tags = [tag_names[int(i)] for i in ids[start:end]]
                for s, e, label in scheme.tags_to_spans(tags, strict=False):
                    ents.append(Span(doc, start + s, start + e, label=label))
            doc.set_ents(ents, default="outside")
            if scored is None:
                continue
            if self.entity_probs:
                probs = [scored["entity_probs"][d].get((e.start, e.end, e.label_)) for e in ents]
                for ent, prob in zip(doc.ents, probs, strict=True):
                    ent._.crf_prob = prob
                doc._.crf_path_prob = scored["path_probs"][d]
                group = SpanGroup(doc, name=self.spans_key, spans=ents)
                group.attrs["scores"] = probs
                doc.spans[self.spans_key] = group
            if self.candidate_threshold is not None:
                found = sorted(scored["candidates"][d], key=lambda c: -c[3])
                key = f"{self.spans_key}_candidates"
                group = SpanGroup(
                    doc, name=key, spans=[Span(doc, s, e, label=lab) for s, e, lab, _ in found]
                )
                group.attrs["scores"] = [p for *_, p in found]
                doc.spans[key] = group

    # ------------------------------------------------------------------ serialization
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / CFG_FILE, self._settings)
        for file, data in self._files.items():
            (path / file).write_bytes(data)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> Any:
        """Read the graphs and settings; a torch crf_ner directory is refused, naming it."""
        path = Path(path)
        if not (path / GRAPH_FILES["model"]).is_file():
            if (path / "model").is_file():
                raise ValueError(
                    f"[crf_ner_onnx] '{path}' holds a torch crf_ner component (file 'model'), "
                    "not an exported one: load it with factory crf_ner, or export it with "
                    "python -m spacy_crf_ner export"
                )
            raise ValueError(
                f"[crf_ner_onnx] Could not load component '{self.name}': the file "
                f"'{path / GRAPH_FILES['model']}' is missing; export the pipeline again"
            )
        require_onnxruntime()
        settings = srsly.read_json(path / CFG_FILE)
        files = {}
        names = list(GRAPH_FILES.values())
        if settings.get("encoder") == "transformer":
            names += TRANSFORMER_FILES.values()
        for file in names:
            if not (path / file).is_file():
                raise ValueError(
                    f"[crf_ner_onnx] Could not load component '{self.name}': the file "
                    f"'{path / file}' is missing; export the pipeline again"
                )
            files[file] = (path / file).read_bytes()
        self._settings, self._files, self._sessions = settings, files, {}
        self._featurizer = self._transformer = None
        self.cfg = {"labels": list(settings["labels"])}
        self._session("model")  # a graph this onnxruntime can't run fails at load time
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return srsly.msgpack_dumps({"settings": self._settings, "files": self._files})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> Any:
        msg = srsly.msgpack_loads(bytes_data)
        self._settings, self._files, self._sessions = msg["settings"], msg["files"], {}
        self._featurizer = self._transformer = None
        self.cfg = {"labels": list(self._settings["labels"])}
        return self

    def __getstate__(self) -> dict[str, Any]:  # for spawned workers: sessions don't pickle
        state = dict(self.__dict__)
        state["_sessions"] = {}
        state["_transformer"] = None
        return state


def _length_groups(order: list[int], lengths: list[int]) -> Iterator[list[int]]:
    """Cut ``order`` (indices sorted by length) into groups of at most ``ROWS_PER_CALL`` rows
    and ``TOKENS_PER_CALL`` padded tokens, whose padded size exceeds their tokens by at most
    ``PADDING_SHARE``."""
    group: list[int] = []
    tokens = 0
    for i in order:
        size = lengths[i] * (len(group) + 1)  # sorted: this one is the longest so far
        too_much_padding = size > (1 + PADDING_SHARE) * (tokens + lengths[i])
        if group and (len(group) >= ROWS_PER_CALL or size > TOKENS_PER_CALL or too_much_padding):
            yield group
            group, tokens = [], 0
        group.append(i)
        tokens += lengths[i]
    if group:
        yield group


def _from_json(value: Any) -> Any:
    if value == "-inf":
        return float("-inf")
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Entity probabilities from the forward and backward vectors (numpy form of SpanPosteriors)


class Posteriors:
    """One batch's forward-backward results; arrays are ``(B, T, K)`` float64."""

    def __init__(self, alpha, beta_emit, emissions, lengths, log_z, trans, start, end) -> None:
        self.alpha, self.beta_emit, self.emissions = alpha, beta_emit, emissions
        self.lengths, self.log_z = lengths, log_z
        self.trans, self.start, self.end = trans, start, end


def _logsumexp(x: numpy.ndarray, axis: int) -> numpy.ndarray:
    top = x.max(axis=axis, keepdims=True)
    safe = numpy.where(numpy.isfinite(top), top, 0.0)
    with numpy.errstate(divide="ignore"):
        return (numpy.log(numpy.exp(x - safe).sum(axis=axis, keepdims=True)) + safe).squeeze(axis)


def segment_probabilities(
    post: Posteriors,
    rows: numpy.ndarray,
    begins: numpy.ndarray,
    tags: numpy.ndarray,
    not_before: numpy.ndarray | None,
    not_after: numpy.ndarray | None,
) -> numpy.ndarray:
    """Posterior probability that positions ``begins..`` of ``rows`` carry exactly ``tags``
    (one tag row for all), the tag before is not in ``not_before`` and the one after not in
    ``not_after`` (``(K,)`` bool masks or None); as ``crf.SpanPosteriors.probabilities``."""
    if len(rows) == 0:
        return numpy.zeros(0)
    width = post.alpha.shape[1]
    seg_len = len(tags)
    stop = begins + seg_len - 1
    positions = numpy.minimum(begins[:, None] + numpy.arange(seg_len), width - 1)
    with numpy.errstate(invalid="ignore", over="ignore"):
        score = post.emissions[rows[:, None], positions, tags[None, :]].sum(1)
        if seg_len > 1:
            score = score + post.trans[tags[:-1], tags[1:]].sum()
        first, last = tags[0], tags[-1]
        left = post.alpha[rows, numpy.maximum(begins - 1, 0)] + post.trans[:, first][None, :]
        if not_before is not None:
            left = numpy.where(not_before[None, :], -numpy.inf, left)
        left = numpy.where(begins > 0, _logsumexp(left, 1), post.start[first])
        seq_len = post.lengths[rows]
        nxt = numpy.minimum(stop + 1, width - 1)
        right = post.trans[last][None, :] + post.beta_emit[rows, nxt]
        if not_after is not None:
            right = numpy.where(not_after[None, :], -numpy.inf, right)
        right = numpy.where(stop + 1 < seq_len, _logsumexp(right, 1), post.end[last])
        log_z = post.log_z[rows]
        valid = (stop < seq_len) & numpy.isfinite(log_z)
        log_prob = left + score + right - numpy.where(valid, log_z, 0.0)
        return numpy.where(valid, numpy.exp(log_prob), 0.0)


def _group_probabilities(post, scheme, tag_names, label, length, rows, begins) -> numpy.ndarray:
    """The probability of ``label`` entities of ``length`` tokens: a sum over the scheme's
    ways of writing one (``TagScheme.segment_patterns``)."""
    index = {name: i for i, name in enumerate(tag_names)}
    total = numpy.zeros(len(rows))
    for tags, not_before, not_after in scheme.segment_patterns(label, length):
        before = numpy.asarray([name in not_before for name in tag_names])
        after = numpy.asarray([name in not_after for name in tag_names])
        total += segment_probabilities(
            post, rows, begins, numpy.asarray([index[t] for t in tags]),
            before if not_before else None, after if not_after else None,
        )  # fmt: skip
    return numpy.clip(total, 0.0, 1.0)


def span_probabilities(post, scheme, tag_names, entities) -> numpy.ndarray:
    """Exact probability of each ``(row, start, end, label)`` entity."""
    groups: dict[tuple[str, int], list[int]] = {}
    for n, (_, start, end, label) in enumerate(entities):
        groups.setdefault((label, end - start), []).append(n)
    out = numpy.zeros(len(entities))
    for (label, length), members in groups.items():
        rows = numpy.asarray([entities[n][0] for n in members])
        begins = numpy.asarray([entities[n][1] for n in members])
        out[members] = _group_probabilities(post, scheme, tag_names, label, length, rows, begins)
    return out


def candidate_probabilities(post, scheme, tag_names, labels, max_length, threshold) -> list:
    """Every labelled span of up to ``max_length`` tokens with probability >= ``threshold``,
    as ``(row, start, end, label, p)`` sorted by row, start, length and label."""
    lengths = post.lengths
    rows = numpy.repeat(numpy.arange(len(lengths)), lengths)
    starts = numpy.concatenate([numpy.arange(n) for n in lengths]) if len(rows) else rows
    room = lengths[rows] - starts
    found = []
    for length in range(1, max_length + 1):
        fits = room >= length
        if not fits.any():
            break
        for label_id, label in enumerate(labels):
            probs = _group_probabilities(
                post, scheme, tag_names, label, length, rows[fits], starts[fits]
            )
            keep = probs >= threshold
            found.extend(
                (int(r), int(s), length, label_id, float(p))
                for r, s, p in zip(rows[fits][keep], starts[fits][keep], probs[keep], strict=True)
            )
    found.sort(key=lambda f: (f[0], f[1], f[2], f[3]))
    return [(r, s, s + n, labels[lab], p) for r, s, n, lab, p in found]
