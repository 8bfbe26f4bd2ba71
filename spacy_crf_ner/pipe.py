"""The ``crf_ner`` pipeline component: entities from a linear-chain CRF over token tags.

The model maps docs to per-token tag scores (emissions); its CRF layer holds the transition,
start and end scores. ``predict`` and ``get_loss`` pad all sequences of a batch into one
(B, T, K) tensor and make a single CRF call (Viterbi or negative log-likelihood), with the
tag scheme's invalid moves forbidden when ``constrained``. Sentences are separate CRF
sequences when ``respect_sentences`` is on and the docs have sentence boundaries, so no
entity can cross one.
"""

from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy
import srsly
from spacy import util
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline.pipe import deserialize_config
from spacy.pipeline.trainable_pipe import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, Optimizer, set_dropout_rate
from thinc.types import Floats2d, Ints1d

from .crf_batch import (
    CandidateRequest,
    NonFiniteLoss,
    Segments,
    crf_decode_with_confidence,
    crf_device,
    crf_loss,
    crf_nbest,
    make_segments,
    torch_constraints,
)
from .registrations import entity_score
from .tags import TagScheme, biluo_to_scheme, get_scheme
from .threads import torch_threads

_MISSING = (None, "-")


# Filled in when the component computes probabilities (entity_probs = true).
if not Span.has_extension("crf_prob"):
    Span.set_extension("crf_prob", default=None)
if not Doc.has_extension("crf_path_prob"):
    Doc.set_extension("crf_path_prob", default=None)


class CRFPredictions(NamedTuple):
    """What ``predict`` returns when probabilities are on (see ``set_annotations``)."""

    tag_ids: list[Ints1d]
    entity_probs: list[dict[tuple[int, int, str], float]]  # per doc: (start, end, label) -> p
    path_probs: list[float]  # per doc: probability of the decoded tag sequence
    candidates: list[list[tuple[int, int, str, float]]]  # per doc: spans >= the threshold


class ComponentLoadError(ValueError):
    """A saved component that can't be loaded; the message names the component and file."""


def _doc_start(doc: Doc, size: int = 50) -> str:
    """The beginning of a doc's text, for error messages."""
    text = doc.text
    return text if len(text) <= size else text[:size] + "..."


class CRFEntityRecognizer(TrainablePipe):
    """Named entities from a CRF tagger: one tag per token in a tag scheme (BILUO by default),
    decoded into ``Doc.ents`` by constrained Viterbi."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "crf_ner",
        *,
        tag_scheme: str = "BILUO",
        constrained: bool = True,
        respect_sentences: bool = True,
        entity_probs: bool = False,
        spans_key: str = "crf_ner",
        candidate_threshold: float | None = None,
        max_candidate_length: int = 10,
        temperature: float = 1.0,
        scorer: Callable | None = entity_score,
    ) -> None:
        """Initialize the component; see ``make_crf_ner`` for the settings.

        Labels and the tag scheme are saved in ``cfg``: the model's tag indices depend on
        both. ``constrained`` and ``respect_sentences`` only affect how the CRF is run, so
        they stay settings of the config and can be overridden at load time.
        """
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.constrained = constrained
        self.respect_sentences = respect_sentences
        self.entity_probs = entity_probs
        self.spans_key = spans_key
        if candidate_threshold is not None and not 0.0 < candidate_threshold <= 1.0:
            raise ValueError(
                f"[crf_ner] candidate_threshold of component '{name}' must be in (0, 1] or "
                f"null; got {candidate_threshold}"
            )
        self.candidate_threshold = candidate_threshold
        self.max_candidate_length = max_candidate_length
        if not 0.0 < temperature < float("inf"):
            raise ValueError(
                f"[crf_ner] temperature of component '{name}' must be a positive number; "
                f"got {temperature}"
            )
        self.temperature = float(temperature)
        self.cfg: dict[str, Any] = {"labels": [], "tag_scheme": self._check_scheme(tag_scheme)}
        self._constraints: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ labels and tags
    def _check_scheme(self, name: str) -> str:
        try:
            return get_scheme(name).name
        except ValueError as err:
            raise ValueError(
                f"[crf_ner] Invalid tag_scheme for component '{self.name}': {err}. Set "
                f"[components.{self.name}] tag_scheme in the config to one of the known schemes."
            ) from None

    @property
    def scheme(self) -> TagScheme:
        """The tag scheme that encodes entities as one tag per token."""
        return get_scheme(self.cfg["tag_scheme"])

    @property
    def labels(self) -> tuple[str, ...]:
        """The entity labels, sorted."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> list[str]:
        """The labels, as ``spacy init labels`` saves them for ``initialize(labels=...)``."""
        return list(self.labels)

    @property
    def tag_names(self) -> tuple[str, ...]:
        """The CRF's tags: the position of a tag here is its index in the model's output."""
        return tuple(self.scheme.tag_names(self.labels))

    def add_label(self, label: str) -> int:
        """Add an entity label; 0 if it was already present, otherwise 1.

        Labels can only be added before the model is initialized: each label adds several
        tags to the CRF, and the output layer is not resizable.
        """
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        if label in self.labels:
            return 0
        if self._n_model_tags() is not None:
            raise ValueError(
                f"[crf_ner] Can't add label '{label}' to component '{self.name}': its model is "
                f"already initialized with the tags of the labels {list(self.labels)}. Add all "
                "labels before initializing (or re-initialize the pipeline with the new labels)."
            )
        self.scheme.tag_names([label])  # validates the label (non-empty, no whitespace, ...)
        self.cfg["labels"] = sorted([*self.labels, label])
        self.vocab.strings.add(label)
        return 1

    def _n_model_tags(self) -> int | None:
        output_layer = self.model.get_ref("output_layer")
        return output_layer.get_dim("nO") if output_layer.has_dim("nO") else None

    def _require_labels(self) -> None:
        if not self.labels:
            raise ValueError(
                f"[crf_ner] No entity labels for component '{self.name}'. The training examples "
                "given to initialize have no entities, and no labels were given: add labels "
                "with add_label, pass labels= to initialize (e.g. [initialize.components."
                f"{self.name}.labels]), or check that the training data has doc.ents."
            )

    # ------------------------------------------------------------------ initialization
    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Language | None = None,
        labels: Iterable[str] | None = None,
    ) -> None:
        """Add the labels (``labels``, or else those of the examples' entities) to any added
        before, and initialize the model on a sample of docs, with one output per CRF tag."""
        validate_get_examples(get_examples, "CRFEntityRecognizer.initialize")
        if labels is not None:
            for label in labels:
                self.add_label(label)
        elif self._n_model_tags() is None:
            found = {ent.label_ for eg in get_examples() for ent in eg.reference.ents}
            for label in sorted(found):
                self.add_label(label)
        self._require_labels()
        n_tags = len(self.tag_names)
        for ref in ("output_layer", "crf"):
            layer = self.model.get_ref(ref)
            if layer.has_dim("nO") is None:
                layer.set_dim("nO", n_tags)
            elif layer.get_dim("nO") != n_tags:
                raise ValueError(
                    f"[crf_ner] The model of component '{self.name}' has {layer.get_dim('nO')} "
                    f"outputs but its labels {list(self.labels)} need {n_tags} tags in the "
                    f"{self.scheme.name} scheme."
                )
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        if not doc_sample:
            raise ValueError(Errors.E923.format(name=self.name))
        self.model.initialize(X=doc_sample)

    # ------------------------------------------------------------------ prediction
    def predict(self, docs: Iterable[Doc]) -> "list[Ints1d] | CRFPredictions":
        """The best tag index sequence for each doc, from one constrained Viterbi call.

        With ``entity_probs`` (or ``candidate_threshold``) on, a ``CRFPredictions`` that also
        holds each predicted entity's exact probability, each doc's best-path probability and
        the candidate spans, from the same padded batch. Docs are not modified. Runs on
        ``threads.inference_threads()`` torch threads (see ``threads.py`` for why).
        """
        docs = list(docs)
        scored = self.entity_probs or self.candidate_threshold is not None
        if not any(len(doc) for doc in docs):
            empty = [numpy.zeros((len(doc),), dtype="int64") for doc in docs]
            if not scored:
                return empty
            return CRFPredictions(empty, [{} for _ in docs], [1.0] * len(docs), [[] for _ in docs])
        with torch_threads():
            return self.decode(docs, self.model.predict(docs), scored=scored)

    def decode(
        self, docs: list[Doc], emissions: list[Floats2d], *, scored: bool
    ) -> "list[Ints1d] | CRFPredictions":
        """``predict``'s second half: the CRF over the model's emissions for ``docs``
        (non-empty in total). Separate so that ``calibrate`` can decode the same emissions
        at several temperatures."""
        docs = list(docs)
        segments, where = self._segments(docs, None)
        tag_names, scheme = self.tag_names, self.scheme
        spans: list[tuple[int, int, int, str]] = []  # (row, start, end, label) on the paths

        def entities_of(paths: numpy.ndarray) -> list[tuple[int, int, int, str]]:
            for row, (_, _, length) in enumerate(where):
                tags = [tag_names[int(i)] for i in paths[row, :length]]
                spans.extend(
                    (row, s, e, label) for s, e, label in scheme.tags_to_spans(tags, strict=False)
                )
            return spans

        threshold = self.candidate_threshold
        with torch_threads():
            decoded = crf_decode_with_confidence(
                self.model.get_ref("crf"),
                self.model.ops.flatten(emissions),
                segments,
                self._get_constraints(),
                entities_of if scored else None,
                scheme,
                tag_names,
                self.temperature,
                allowed=self._allowed_tags(docs),
                candidates=(
                    CandidateRequest(self.labels, self.max_candidate_length, threshold)
                    if scored and threshold is not None
                    else None
                ),
            )
        paths = decoded.paths
        out = [numpy.zeros((len(doc),), dtype="int64") for doc in docs]
        for row, (i, start, length) in enumerate(where):
            out[i][start : start + length] = paths[row, :length]
        if not scored:
            return out
        assert decoded.path_probs is not None and decoded.entity_probs is not None
        entity_probs: list[dict[tuple[int, int, str], float]] = [{} for _ in docs]
        doc_path_probs = [1.0] * len(docs)
        candidates: list[list[tuple[int, int, str, float]]] = [[] for _ in docs]
        for row, (i, _, _) in enumerate(where):
            doc_path_probs[i] *= float(decoded.path_probs[row])
        for (row, s, e, label), prob in zip(spans, decoded.entity_probs, strict=True):
            i, start, _ = where[row]
            entity_probs[i][(start + s, start + e, label)] = float(prob)
        for row, s, e, label, prob in decoded.candidates or ():
            i, start, _ = where[row]
            candidates[i].append((start + s, start + e, label, prob))
        return CRFPredictions(out, entity_probs, doc_path_probs, candidates)

    def set_annotations(self, docs: Iterable[Doc], predictions: Any) -> None:
        """Write the entities of the predicted tags into ``Doc.ents`` (replacing any).

        With probabilities, each entity also gets ``ent._.crf_prob``, the doc
        ``doc._.crf_path_prob``, and ``doc.spans[spans_key]`` holds the entities with
        ``attrs["scores"]``; with ``candidate_threshold``, ``doc.spans[spans_key +
        "_candidates"]`` holds every span at or above it (overlaps allowed), best first.
        """
        scored = isinstance(predictions, CRFPredictions)
        tag_ids = predictions.tag_ids if scored else predictions
        tag_names = self.tag_names
        scheme = self.scheme
        for d, (doc, ids) in enumerate(zip(docs, tag_ids, strict=True)):
            ents = []
            for start, end in self._doc_sequences(doc, None):
                tags = [tag_names[int(i)] for i in ids[start:end]]
                for s, e, label in scheme.tags_to_spans(tags, strict=False):
                    ents.append(Span(doc, start + s, start + e, label=label))
            doc.set_ents(ents, default="outside")
            if not scored:
                continue
            if self.entity_probs:
                probs = [predictions.entity_probs[d].get((e.start, e.end, e.label_)) for e in ents]
                for ent, prob in zip(doc.ents, probs, strict=True):
                    ent._.crf_prob = prob
                doc._.crf_path_prob = predictions.path_probs[d]
                group = SpanGroup(doc, name=self.spans_key, spans=ents)
                group.attrs["scores"] = probs
                doc.spans[self.spans_key] = group
            if self.candidate_threshold is not None:
                found = sorted(predictions.candidates[d], key=lambda c: -c[3])
                key = f"{self.spans_key}_candidates"
                group = SpanGroup(
                    doc, name=key, spans=[Span(doc, s, e, label=lab) for s, e, lab, _ in found]
                )
                group.attrs["scores"] = [p for *_, p in found]
                doc.spans[key] = group

    def _allowed_tags(self, docs: list[Doc]) -> numpy.ndarray | None:
        """The tags each token of ``docs`` may take, ``(n_tokens, n_tags)`` bool, or None
        when every token may take every tag.

        No entity begins or ends on a whitespace token (``Token.is_space``): "Paris\\n\\n" is
        one entity, not two, and a paragraph break never starts one. Where the scheme closes
        entities with tags of its own (BILUO, BIOES, BMES, BMEWO) and ``constrained`` holds,
        a whitespace token may be O or *inside* an entity (a line break within a name), but
        not begin, end or be one. In BIO and IOB1 the end of an entity is only implied by
        the next tag, which per-token allowed tags cannot forbid, and without constraints
        an inside tag after O opens an entity: there whitespace tokens are O. The CRF then
        finds the best path among the allowed ones, and probabilities are normalised over
        them. Decoding only: training keeps the gold tags as they are, so that gold entities
        with a whitespace edge (e.g. offsets that include a newline) cannot make the loss
        infinite.
        """
        space = numpy.concatenate([doc.to_array("IS_SPACE") for doc in docs]).astype(bool)
        if not space.any():
            return None
        names = self.tag_names
        on_space = numpy.asarray([name == "O" for name in names])
        if self.constrained:
            for label in self.labels:
                begin, inside, last = self.scheme.spans_to_tags([(0, 3, label)], 3)
                if inside != last:  # the scheme has an end tag, so "inside" never ends one
                    on_space |= numpy.asarray([name == inside for name in names])
        return ~space[:, None] | on_space[None, :]

    def nbest(self, docs: Iterable[Doc], k: int = 5) -> list[list[tuple[list[Span], float]]]:
        """The ``k`` best analyses of each doc: (entities, probability), most probable first.

        Each doc is one CRF sequence here (sentence boundaries are not split), so the
        probabilities of a doc's analyses are comparable and sum to at most 1.
        """
        docs = list(docs)
        result: list[list[tuple[list[Span], float]]] = [[] for _ in docs]
        nonempty = [doc for doc in docs if len(doc)]
        if not nonempty:
            return [[([], 1.0)] for _ in docs]
        lengths = [len(doc) for doc in nonempty]
        offsets = numpy.cumsum([0, *lengths])[:-1]
        with torch_threads():
            paths, probs = crf_nbest(
                self.model.get_ref("crf"),
                self.model.ops.flatten(self.model.predict(nonempty)),
                make_segments(offsets, lengths),
                k,
                self._get_constraints(),
                self.temperature,
                self._allowed_tags(nonempty),
            )
        tag_names, scheme = self.tag_names, self.scheme
        rows = iter(range(len(nonempty)))
        for i, doc in enumerate(docs):
            if not len(doc):
                result[i] = [([], 1.0)]
                continue
            r = next(rows)
            for rank in range(k):
                if not probs[r, rank] > 0.0:
                    break
                tags = [tag_names[int(t)] for t in paths[r, rank, : len(doc)]]
                ents = [Span(doc, s, e, label=lab) for s, e, lab in scheme.tags_to_spans(tags)]
                result[i].append((ents, float(probs[r, rank])))
        return result

    def _doc_sequences(self, doc: Doc, gold: list[str | None] | None) -> list[tuple[int, int]]:
        """The (start, end) token ranges that are separate CRF sequences of a doc.

        With gold BILUO tags (training), a sentence boundary that a gold entity crosses is
        not split, so that the gold tags stay a valid sequence.
        """
        n = len(doc)
        if n == 0:
            return []
        if not (self.respect_sentences and doc.has_annotation("SENT_START")):
            return [(0, n)]
        starts = [int(i) for i in numpy.flatnonzero(doc.to_array("SENT_START") == 1) if i > 0]
        if gold is not None:
            starts = [i for i in starts if not _crosses(gold, i)]
        bounds = [0, *starts, n]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def _segments(
        self, docs: list[Doc], golds: list[list[str | None] | None] | None
    ) -> tuple[Segments, list[tuple[int, int, int]]]:
        """The padded-batch layout of the docs' sequences, and (doc, start, length) per row.

        Docs without a gold entry (``golds[i] is None``) and empty docs get no row.
        """
        offsets = numpy.cumsum([0] + [len(doc) for doc in docs])
        where = []
        for i, doc in enumerate(docs):
            gold = None if golds is None else golds[i]
            if golds is not None and gold is None:
                continue
            for start, end in self._doc_sequences(doc, gold):
                where.append((i, start, end - start))
        segments = make_segments(
            [offsets[i] + start for i, start, _ in where], [length for _, _, length in where]
        )
        return segments, where

    def _get_constraints(self) -> Any:
        """The scheme's allowed moves as torch masks on the CRF's device (cached), or None."""
        if not self.constrained:
            return None
        device = crf_device(self.model.get_ref("crf"))
        key = (self.scheme.name, self.tag_names, str(device))
        if key not in self._constraints:
            arrays = self.scheme.allowed_transitions(self.tag_names)
            self._constraints = {key: torch_constraints(arrays, device)}
        return self._constraints[key]

    # ------------------------------------------------------------------ training
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optimizer | None = None,
        losses: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Learn from a batch of examples: CRF negative log-likelihood, summed over the
        batch; docs without any entity annotation are skipped."""
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "CRFEntityRecognizer.update")
        examples = list(examples)
        if not any(len(eg.predicted) for eg in examples):
            return losses
        golds = self._golds(examples)
        set_dropout_rate(self.model, drop)
        emissions, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_emissions, param_grads = self._loss(examples, emissions, golds)
        backprop(d_emissions)
        crf = self.model.get_ref("crf")
        for name, grad in param_grads.items():
            crf.inc_grad(name, grad)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(
        self, examples: Iterable[Example], scores: list[Floats2d]
    ) -> tuple[float, list[Floats2d]]:
        """The CRF negative log-likelihood and its gradient w.r.t. the emissions."""
        validate_examples(examples, "CRFEntityRecognizer.get_loss")
        examples = list(examples)
        loss, d_scores, _ = self._loss(examples, scores, self._golds(examples))
        return loss, d_scores

    def _loss(
        self,
        examples: list[Example],
        scores: list[Floats2d],
        golds: list[list[str | None] | None],
    ) -> tuple[float, list[Floats2d], dict[str, Any]]:
        ops = self.model.ops
        docs = [eg.predicted for eg in examples]
        segments, where = self._segments(docs, golds)
        if not where:
            return 0.0, [ops.alloc2f(*s.shape) for s in scores], {}
        gold = numpy.full(segments.index.shape, -1, dtype="int64")
        for row, (i, start, length) in enumerate(where):
            biluo = golds[i]
            assert biluo is not None
            # Converted per CRF sequence: e.g. IOB1 writes B-X at an entity that follows
            # another X directly, which is I-X when a sentence boundary separates them.
            gold[row, :length] = self._gold_tag_ids(docs[i], biluo[start : start + length], start)
        crf = self.model.get_ref("crf")
        try:
            loss, d_flat, param_grads = crf_loss(
                crf, ops.flatten(scores), segments, gold, self._get_constraints()
            )
        except NonFiniteLoss as err:
            doc = docs[where[err.rows[0]][0]]
            raise ValueError(
                f"[crf_ner] Component '{self.name}': the gold entities of the doc starting "
                f"'{_doc_start(doc)}' are not a valid {self.scheme.name} tag sequence within "
                "one CRF sequence, so the constrained CRF gives them no probability. Check "
                "that no entity crosses a sentence boundary, or set constrained = false."
            ) from None
        lengths = numpy.asarray([len(doc) for doc in docs])
        return loss, ops.unflatten(d_flat, lengths), param_grads

    def _golds(self, examples: list[Example]) -> list[list[str | None] | None]:
        """Aligned BILUO tags per example; None for empty docs and docs without any
        annotation (they are skipped)."""
        golds: list[list[str | None] | None] = []
        for eg in examples:
            biluo = eg.get_aligned_ner() if len(eg.predicted) else []
            if all(tag in _MISSING for tag in biluo):
                golds.append(None)
            else:
                golds.append(list(biluo))
        return golds

    def _gold_tag_ids(self, doc: Doc, biluo: list[str | None], offset: int = 0) -> numpy.ndarray:
        """Tag indices for the aligned BILUO tags of one CRF sequence (``doc`` from token
        ``offset`` on); -1 where the label is missing."""
        labels = set(self.labels)
        for tag in biluo:
            if tag not in _MISSING and tag != "O" and tag[2:] not in labels:
                raise ValueError(
                    f"[crf_ner] Unknown entity label '{tag[2:]}' in the gold annotation of the "
                    f"doc starting '{_doc_start(doc)}': component '{self.name}' has the labels "
                    f"{list(self.labels)}. Initialize it with all labels of the training data "
                    f"(e.g. [initialize.components.{self.name}.labels]), or remove the label."
                )
        problems = _biluo_problems(biluo)
        if problems:
            position, message = problems[0]
            position += offset
            raise ValueError(
                f"[crf_ner] Invalid gold entity annotation in the doc starting "
                f"'{_doc_start(doc)}' for component '{self.name}' at token {position} "
                f"('{doc[position].text}'): {message}. Entities must not overlap."
            )
        tag_index = {tag: i for i, tag in enumerate(self.tag_names)}
        converted = biluo_to_scheme(biluo, self.scheme)
        return numpy.asarray(
            [-1 if tag is None else tag_index[tag] for tag in converted], dtype="int64"
        )

    # ------------------------------------------------------------------ serialization
    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> Any:
        """Load the component from bytes; a damaged model raises a ValueError that says so."""
        self._validate_serialization_attrs()
        deserialize = {
            "cfg": lambda b: self._load_cfg(srsly.json_loads(b)),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: self._load_model(b, "bytes"),
        }
        try:
            util.from_bytes(bytes_data, deserialize, exclude)
        except ComponentLoadError:
            raise
        except Exception as err:
            raise self._load_error("bytes", err) from err
        return self

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> Any:
        """Load the component from a directory; damaged files raise a ValueError naming the
        component and the file."""
        self._validate_serialization_attrs()

        def load_cfg(p: Path) -> None:
            try:
                cfg = deserialize_config(p)
            except Exception as err:
                raise self._load_error(p, err) from err
            self._load_cfg(cfg)

        def load_model(p: Path) -> None:
            try:
                data = Path(p).read_bytes()
            except OSError as err:
                raise self._load_error(p, err) from err
            self._load_model(data, p)

        deserialize = {
            "cfg": load_cfg,
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        return self

    def _load_error(self, source: Any, err: Exception) -> "ComponentLoadError":
        where = "bytes" if source == "bytes" else f"file '{source}'"
        return ComponentLoadError(
            f"[crf_ner] Could not load component '{self.name}' from {where}: the data is damaged, "
            f"truncated or was not saved by this component ({type(err).__name__}: {err})"
        )

    def _load_cfg(self, cfg: Any) -> None:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("labels", []), list):
            raise ComponentLoadError(f"[crf_ner] Invalid cfg of component '{self.name}': {cfg!r}")
        self.cfg.update(cfg)
        try:
            self.cfg["tag_scheme"] = self._check_scheme(self.cfg["tag_scheme"])
        except ValueError as err:
            raise ComponentLoadError(str(err)) from None

    def _load_model(self, data: bytes, source: Any) -> None:
        try:
            self.model.from_bytes(data)
        except Exception as err:
            raise self._load_error(source, err) from err
        n_tags = self._n_model_tags()
        if n_tags is not None and n_tags != len(self.tag_names):
            raise ComponentLoadError(
                f"[crf_ner] The model of component '{self.name}' loaded from "
                f"{'bytes' if source == 'bytes' else repr(str(source))} has {n_tags} outputs, "
                f"but its labels {list(self.labels)} need {len(self.tag_names)} tags in the "
                f"{self.scheme.name} scheme: the model and cfg files do not belong together."
            )


def _crosses(biluo: list[str | None], boundary: int) -> bool:
    """Whether a gold entity continues across the token boundary before ``boundary``."""
    before, after = biluo[boundary - 1], biluo[boundary]
    return (after is not None and after[:2] in ("I-", "L-")) or (
        before is not None and before[:2] in ("B-", "I-")
    )


def _biluo_problems(biluo: list[str | None]) -> list[tuple[int, str]]:
    """Problems inside each run of annotated BILUO tags.

    A run may start inside an entity or end inside one where it borders a missing position
    (the gap may hold the rest), but within a run the tags must form non-overlapping
    entities: e.g. B-PER B-ORG L-ORG L-PER (two overlapping entities) is rejected.
    """
    scheme = get_scheme("BILUO")
    problems = []
    n = len(biluo)
    pos = 0
    while pos < n:
        if biluo[pos] in _MISSING:
            pos += 1
            continue
        end = pos
        while end < n and biluo[end] not in _MISSING:
            end += 1
        run = [str(tag) for tag in biluo[pos:end]]
        # Close entities that are cut by a gap with virtual tags, then validate strictly.
        head = [f"B-{run[0][2:]}"] if pos > 0 and run[0][:2] in ("I-", "L-") else []
        tail = [f"L-{run[-1][2:]}"] if end < n and run[-1][:2] in ("B-", "I-") else []
        for offset, message in scheme.validate(head + run + tail):
            position = min(max(pos + offset - len(head), pos), end - 1)
            problems.append((position, message))
        pos = end
    return problems
