"""The ``crf_ner`` pipeline component: entities from a linear-chain CRF over token tags.

The model maps docs to per-token tag scores (emissions); its CRF layer holds the transition,
start and end scores. ``predict`` and ``get_loss`` pad all sequences of a batch into one
(B, T, K) tensor and make a single CRF call (Viterbi or negative log-likelihood), with the
tag scheme's invalid moves forbidden when ``constrained``. Sentences are separate CRF
sequences when ``respect_sentences`` is on and the docs have sentence boundaries, so no
entity can cross one. Examples read by ``spacy_crf_ner.TeacherCorpus.v1`` carry a teacher
CRF, which the component also learns from (``distill_weight``; ``crf_distill.py``).
"""

import logging
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy
import srsly
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline.trainable_pipe import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate
from thinc.types import Floats2d, Ints1d

from .architectures import TagResizeError, resize_tags
from .crf_batch import (
    CandidateRequest,
    NonFiniteLoss,
    Segments,
    crf_decode,
    crf_decode_with_confidence,
    crf_device,
    crf_loss,
    crf_nbest,
    make_segments,
    torch_constraints,
)
from .layers import CRF_PARAMS
from .scorer import entity_score
from .tags import (
    TagScheme,
    biluo_problems,
    biluo_to_scheme,
    entity_crosses,
    get_scheme,
    is_missing,
)
from .teacher_cache import TeacherCache, TeacherSignal, teacher_signal
from .threads import torch_threads

logger = logging.getLogger("spacy_crf_ner")

# Saved with the CRF layer's weights (model attrs): the labels and the tag scheme that its
# tag indices stand for, checked against the cfg when a component is loaded.
LABELS_ATTR = "crf_ner_labels"
SCHEME_ATTR = "crf_ner_tag_scheme"

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


def _gold_labels(golds: Iterable[list[str | None] | None]) -> set[str]:
    """The entity labels in aligned BILUO tags."""
    return {str(tag)[2:] for gold in golds for tag in gold or () if not is_missing(tag)} - {""}


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (a config's ``true`` is not 1.0) and not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
        distill_weight: float = 0.5,
        distill_temperature: float = 1.0,
        distill_hard: bool = False,
        recall_cost: float = 0.0,
        scorer: Callable | None = entity_score,
    ) -> None:
        """Initialize the component; see ``make_crf_ner`` for the settings.

        Every setting is checked here, so that a bad value fails when the pipeline is made,
        with the setting's name, rather than later or silently. Labels and the tag scheme
        are saved in ``cfg``: the model's tag indices depend on both. ``constrained`` and
        ``respect_sentences`` only affect how the CRF is run, so they stay settings of the
        config and can be overridden at load time.
        """
        self.vocab = vocab
        self.name = name
        for ref in ("tok2vec", "output_layer", "crf"):
            if not isinstance(model, Model) or not model.has_ref(ref):
                self._setting_error(
                    "model",
                    model,
                    f"a Thinc model with a '{ref}' layer, e.g. spacy_crf_ner.CRFTagger.v1",
                )
        self.model = model
        if scorer is not None and not callable(scorer):
            self._setting_error("scorer", scorer, "a function or null")
        self.scorer = scorer
        self.constrained = self._check_bool("constrained", constrained)
        self.respect_sentences = self._check_bool("respect_sentences", respect_sentences)
        self.entity_probs = self._check_bool("entity_probs", entity_probs)
        if not isinstance(spans_key, str) or not spans_key:
            self._setting_error("spans_key", spans_key, "a non-empty string")
        self.spans_key = spans_key
        if candidate_threshold is not None and not (
            _is_number(candidate_threshold) and 0.0 < candidate_threshold <= 1.0
        ):
            self._setting_error("candidate_threshold", candidate_threshold, "in (0, 1] or null")
        self.candidate_threshold = candidate_threshold
        if not _is_integer(max_candidate_length) or max_candidate_length < 1:
            self._setting_error(
                "max_candidate_length", max_candidate_length, "a whole number of tokens >= 1"
            )
        self.max_candidate_length = int(max_candidate_length)
        if not (_is_number(temperature) and 0.0 < temperature < math.inf):
            self._setting_error("temperature", temperature, "a positive number")
        self.temperature = float(temperature)
        if not (_is_number(distill_weight) and 0.0 <= distill_weight <= 1.0):
            self._setting_error("distill_weight", distill_weight, "a number in [0, 1]")
        self.distill_weight = float(distill_weight)
        if not (_is_number(distill_temperature) and 0.0 < distill_temperature < math.inf):
            self._setting_error("distill_temperature", distill_temperature, "a positive number")
        self.distill_temperature = float(distill_temperature)
        self.distill_hard = self._check_bool("distill_hard", distill_hard)
        if not (_is_number(recall_cost) and 0.0 <= recall_cost < math.inf):
            self._setting_error("recall_cost", recall_cost, "a number >= 0")
        self.recall_cost = float(recall_cost)
        self.cfg: dict[str, Any] = {"labels": [], "tag_scheme": self._check_scheme(tag_scheme)}
        self._constraints: dict[tuple, Any] = {}
        # The model as it was before fine-tuning (``nlp.resume_training``), for ``rehearse``.
        self._rehearsal_model: Model | None = None

    def _setting_error(self, setting: str, value: Any, expected: str) -> NoReturn:
        raise ValueError(
            f"[crf_ner] {setting} of component '{self.name}' must be {expected}; got "
            f"{value!r}. Set [components.{self.name}] {setting} in the config."
        )

    def _check_bool(self, setting: str, value: Any) -> bool:
        if not isinstance(value, bool | numpy.bool_):
            self._setting_error(setting, value, "true or false")
        return bool(value)

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
    def untrained_labels(self) -> tuple[str, ...]:
        """Labels added to a trained component that no gold entity has had since: their
        tags are not predicted until an update sees them (as spaCy's parser does with
        unseen actions), so adding a label leaves the predictions unchanged."""
        return tuple(self.cfg.get("untrained_labels", ()))

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

        On a trained component the emission layer and the CRF grow by the label's tags (4
        in BILUO), keeping every learned weight at its tag's new index; the new tags start
        so that predictions do not change until they are trained (see ``resize_tags``).
        Then train on examples with the new label, e.g. after ``nlp.resume_training()``.
        """
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        if label in self.labels:
            return 0
        try:
            self.scheme.tag_names([label])
        except ValueError as err:
            raise ValueError(
                f"[crf_ner] Can't add label to component '{self.name}': {err}"
            ) from None
        old_tags = self.tag_names
        labels = sorted([*self.labels, label])
        if self._is_trained():
            new_tags = self.scheme.tag_names(labels)
            for model in (self.model, self._rehearsal_model):
                if model is not None:
                    self._resize(model, old_tags, new_tags, label)
            self.cfg["untrained_labels"] = sorted([*self.untrained_labels, label])
        self.cfg["labels"] = labels
        self.vocab.strings.add(label)
        self._store_labels_with_model()
        return 1

    def _resize(
        self, model: Model, old_tags: Sequence[str], new_tags: Sequence[str], label: str
    ) -> None:
        position = {tag: i for i, tag in enumerate(new_tags)}
        try:
            resize_tags(model, [position[tag] for tag in old_tags], len(new_tags))
        except TagResizeError as err:
            raise ValueError(
                f"[crf_ner] Can't add label '{label}' to the trained component '{self.name}': "
                f"{err}. Add all labels before initializing instead."
            ) from None

    def _n_model_tags(self) -> int | None:
        output_layer = self.model.get_ref("output_layer")
        return output_layer.get_dim("nO") if output_layer.has_dim("nO") else None

    def _is_trained(self) -> bool:
        return bool(self.model.get_ref("output_layer").has_param("W"))

    def _store_labels_with_model(self) -> None:
        """Save the labels and the scheme with the CRF weights too (``crf.attrs``): loading
        compares them with the cfg's, so that a cfg edited or mixed up with another model
        can't shift the labels silently."""
        crf = self.model.get_ref("crf")
        crf.attrs[LABELS_ATTR] = list(self.labels)
        crf.attrs[SCHEME_ATTR] = self.scheme.name

    def _require_labels(self, n_examples: int) -> None:
        if not self.labels and not n_examples:
            raise ValueError(
                f"[crf_ner] No entity labels for component '{self.name}': initialize got no "
                "training examples and no labels. In spacy train, the training corpus is "
                "empty: check [paths] train (spaCy's corpus reader reads only .spacy DocBin "
                "files and skips others with a warning; convert CoNLL/IOB columns with python "
                "-m spacy_crf_ner convert train.iob --output-dir corpus). In Python, pass "
                "get_examples or labels= to initialize."
            )
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
        before, and initialize the model on a sample of docs, with one output per CRF tag.

        This starts training afresh: on a trained component the weights are re-initialized
        (with a warning). To train a trained component further, keep its weights with
        ``nlp.resume_training()`` (or ``source`` it in a training config) and add new labels
        with ``add_label``.
        """
        validate_get_examples(get_examples, "CRFEntityRecognizer.initialize")
        if self._is_trained():
            logger.warning(
                "[crf_ner] Initializing the trained component '%s' re-initializes its "
                "weights. To keep them and train further, use nlp.resume_training() instead "
                "of nlp.initialize() (in a training config: source the component), and "
                "add_label for new labels.",
                self.name,
            )
        gold_labels: set[str] = set()
        teachers: dict[int, TeacherCache] = {}
        n_examples = 0
        for eg in get_examples():
            n_examples += 1
            if labels is None:
                gold_labels.update(ent.label_ for ent in eg.reference.ents)
            signal = teacher_signal(eg)
            if signal is not None:
                teachers.setdefault(id(signal.cache), signal.cache)
        if labels is None:
            # Text that only a teacher labels (distillation) has no entities of its own.
            labels = sorted(gold_labels.union(*(c.labels for c in teachers.values())))
        for label in labels:
            self.add_label(label)
        self._require_labels(n_examples)
        for cache in teachers.values():  # fail now, not at the first update
            cache.tag_order(self.tag_names, self.scheme.name, self.labels)
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
        self._require_static_vectors()
        self.model.initialize(X=doc_sample)
        self._store_labels_with_model()
        self.cfg["trained_constrained"] = self.constrained
        self.cfg.pop("untrained_labels", None)
        self._rehearsal_model = None

    def _require_static_vectors(self) -> None:
        """Static vectors need a vectors table: without one spaCy's StaticVectors layer fails
        later with an IndexError from deep inside numpy, so say what is missing here."""
        uses_vectors = any(node.name == "static_vectors" for node in self.model.walk())
        if uses_vectors and self.vocab.vectors.shape[0] == 0:
            raise ValueError(
                f"[crf_ner] The model of component '{self.name}' uses static vectors "
                "(include_static_vectors = true) but the pipeline has no vectors table. Set "
                "[initialize] vectors to a pipeline or directory with vectors (e.g. "
                "'en_core_web_lg', or the output of 'spacy init vectors'), or set "
                "include_static_vectors = false."
            )

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
            starts = [i for i in starts if not entity_crosses(gold, i)]
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

    def _get_constraints(self, hidden: Iterable[str] | None = None) -> Any:
        """The allowed moves as torch masks on the CRF's device (cached), or None for none.

        The scheme's valid moves when ``constrained``; and no move at all into the tags of
        the ``hidden`` labels (by default the untrained ones: added to a trained component
        and not yet seen in gold), so that they are never predicted before training.
        """
        hidden = tuple(sorted(self.untrained_labels if hidden is None else hidden))
        if not self.constrained and not hidden:
            return None
        device = crf_device(self.model.get_ref("crf"))
        key = (self.scheme.name, self.tag_names, self.constrained, hidden, str(device))
        if key not in self._constraints:
            n = len(self.tag_names)
            if self.constrained:
                trans, start, end = self.scheme.allowed_transitions(self.tag_names)
            else:
                trans, start, end = (
                    numpy.ones((n, n), bool),
                    numpy.ones(n, bool),
                    numpy.ones(n, bool),
                )
            off = [i for i, tag in enumerate(self.tag_names) if tag != "O" and tag[2:] in hidden]
            trans[:, off], start[off], end[off] = False, False, False
            if len(self._constraints) >= 4:  # e.g. the model's and a rehearsal copy's
                self._constraints.clear()
            self._constraints[key] = torch_constraints((trans, start, end), device)
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
        batch; docs without any entity annotation are skipped, unless they carry a teacher
        (distillation, see ``_loss``)."""
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "CRFEntityRecognizer.update")
        examples = list(examples)
        if not any(len(eg.predicted) for eg in examples):
            return losses
        golds = self._golds(examples)
        if self.untrained_labels:
            seen = _gold_labels(golds)
            seen.update(
                *(signal.cache.labels for signal in map(teacher_signal, examples) if signal)
            )
            untrained = [label for label in self.untrained_labels if label not in seen]
            self.cfg["untrained_labels"] = untrained
            if not untrained:
                del self.cfg["untrained_labels"]
        set_dropout_rate(self.model, drop)
        emissions, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_emissions, param_grads = self._loss(examples, emissions, golds)
        backprop(d_emissions)
        self._step(param_grads, sgd)
        losses[self.name] += loss
        self.cfg["trained_constrained"] = self.constrained
        return losses

    def rehearse(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optimizer | None = None,
        losses: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Learn to keep predicting what the model predicted before fine-tuning.

        ``nlp.resume_training()`` keeps a copy of the model; here the copy decodes the
        examples' docs (their annotation is not used) and the model learns those tag
        sequences by the CRF negative log-likelihood, as from gold tags. Mixing
        ``nlp.rehearse`` on unlabelled text of the old domain into fine-tuning on new data
        counters forgetting (spaCy's "pseudo-rehearsal"). Nothing happens before
        ``resume_training``.
        """
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "CRFEntityRecognizer.rehearse")
        docs = [eg.predicted for eg in examples]
        if self._rehearsal_model is None or not any(len(doc) for doc in docs):
            return losses
        ops = self.model.ops
        segments, _ = self._segments(docs, None)
        tutor = self._rehearsal_model
        # The copy predicts none of the labels added after it was made (nor untrained ones).
        tutor_labels = tutor.get_ref("crf").attrs.get(LABELS_ATTR, self.labels)
        hidden = {*self.untrained_labels, *(set(self.labels) - set(tutor_labels))}
        tutor_paths = crf_decode(
            tutor.get_ref("crf"),
            ops.flatten(tutor.predict(docs)),
            segments,
            self._get_constraints(hidden),
        )
        constraints = self._get_constraints()
        set_dropout_rate(self.model, drop)
        emissions, backprop = self.model.begin_update(docs)
        crf = self.model.get_ref("crf")
        loss, d_flat, param_grads = crf_loss(
            crf, ops.flatten(emissions), segments, tutor_paths, constraints
        )
        backprop(ops.unflatten(d_flat, numpy.asarray([len(doc) for doc in docs])))
        self._step(param_grads, sgd)
        losses[self.name] += loss
        return losses

    def _step(self, crf_grads: dict[str, Any], sgd: Optimizer | None) -> None:
        """Add the CRF parameters' gradients (computed outside Thinc) and, with an
        optimizer, step the whole model."""
        crf = self.model.get_ref("crf")
        for name, grad in crf_grads.items():
            crf.inc_grad(name, grad)
        if sgd not in (None, False):
            self.finish_update(sgd)

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
        """The gold NLL; for examples that carry a teacher (``TeacherCorpus.v1``),
        ``distill_weight`` x the distillation loss + (1 - ``distill_weight``) x the gold NLL
        (0 for a doc without gold entities)."""
        signals = [teacher_signal(eg) for eg in examples]
        if not any(signals):
            return self._gold_loss(examples, scores, golds)
        weight = self.distill_weight
        # Gold NLL at 1 - distill_weight beside a teacher, at 1 without one.
        with_teacher = [g if t else None for g, t in zip(golds, signals, strict=True)]
        without = [None if t else g for g, t in zip(golds, signals, strict=True)]
        parts = [
            (1.0 - weight, lambda golds=with_teacher: self._gold_loss(examples, scores, golds)),
            (1.0, lambda golds=without: self._gold_loss(examples, scores, golds)),
            (weight, lambda: self._distill_loss(examples, scores, golds, signals)),
        ]
        total, d_total, grads_total = 0.0, [self.model.ops.alloc2f(*s.shape) for s in scores], {}
        for part_weight, compute in parts:
            if part_weight == 0.0:
                continue
            loss, d_scores, grads = compute()
            total += part_weight * loss
            for d_sum, d in zip(d_total, d_scores, strict=True):
                d_sum += part_weight * d
            for name, grad in grads.items():
                grads_total[name] = grads_total.get(name, 0.0) + part_weight * grad
        return total, d_total, grads_total

    def _distill_loss(
        self,
        examples: list[Example],
        scores: list[Floats2d],
        golds: list[list[str | None] | None],
        signals: list[TeacherSignal | None],
    ) -> tuple[float, list[Floats2d], dict[str, Any]]:
        """KL(teacher || student) over the tag sequences of each CRF sequence, from the
        teacher's cached emissions and CRF (its marginals at ``distill_temperature``); with
        ``distill_hard``, the NLL of the teacher's Viterbi path instead (hard silver labels).

        The teacher's CRF sequences are the student's, and the student's per-token allowed
        tags apply to both, so both distributions are over the same paths.
        """
        import torch
        from thinc.api import torch2xp, xp2torch

        from .crf import as_constraints, nll, viterbi
        from .crf_batch import crf_params, pad_emissions
        from .crf_distill import structural_kl, teacher_marginals

        ops = self.model.ops
        docs = [eg.predicted for eg in examples]
        offsets = numpy.cumsum([0] + [len(doc) for doc in docs])
        groups: dict[int, list[int]] = {}
        for i, (doc, signal) in enumerate(zip(docs, signals, strict=True)):
            if signal is None or not len(doc):
                continue
            if len(signal.emissions) != len(doc):
                raise ValueError(
                    f"[crf_ner] Component '{self.name}': the teacher output cached for the doc "
                    f"starting '{_doc_start(doc)}' has {len(signal.emissions)} tokens, the doc "
                    f"{len(doc)}. Distillation needs the reader's tokens unchanged (no "
                    f"augmenter); if the cache is stale, delete {signal.cache.path}."
                )
            groups.setdefault(id(signal.cache), []).append(i)
        crf = self.model.get_ref("crf")
        flat = xp2torch(ops.flatten(scores), requires_grad=True)
        params = crf_params(crf, requires_grad=True)
        allowed = self._allowed_tags(docs)
        constraints = self._get_constraints(())  # the teacher trains every label
        device = flat.device
        total = torch.zeros((), dtype=torch.float64, device=device)
        for rows in groups.values():
            cache = signals[rows[0]].cache  # type: ignore[union-attr]
            order = cache.tag_order(self.tag_names, self.scheme.name, self.labels)
            where = [(i, s, e - s) for i in rows for s, e in self._doc_sequences(docs[i], golds[i])]
            segments = make_segments(
                [offsets[i] + start for i, start, _ in where], [n for _, _, n in where]
            )
            teacher_flat = numpy.zeros((int(offsets[-1]), len(order)), dtype="float32")
            for i in rows:
                teacher_flat[offsets[i] : offsets[i + 1]] = signals[i].emissions[:, order]  # type: ignore[union-attr]
            student, mask = pad_emissions(flat, segments, allowed)
            teacher, _ = pad_emissions(
                torch.as_tensor(teacher_flat, device=device), segments, allowed
            )
            ix = numpy.asarray(order)
            teacher_params = [
                torch.as_tensor(a, device=device)
                for a in (cache.transitions[ix][:, ix], cache.start[ix], cache.end[ix])
            ]
            moves, first, last = cache.allowed
            teacher_constraints = as_constraints(
                (moves[ix][:, ix], first[ix], last[ix]), len(order), device
            )
            if self.distill_hard:
                paths, _ = viterbi(teacher, mask, *teacher_params, teacher_constraints)
                losses = nll(student, mask, *params, tags=paths.clamp(min=0),
                             constraints=constraints, reduction="none")  # fmt: skip
            else:
                marginals = teacher_marginals(
                    teacher, mask, *teacher_params, teacher_constraints,
                    temperature=self.distill_temperature,
                )  # fmt: skip
                losses = structural_kl(student, mask, *params, marginals, constraints,
                                       reduction="none")  # fmt: skip
            finite = torch.isfinite(losses)
            if not bool(finite.all()):
                doc = docs[where[int((~finite).nonzero()[0])][0]]
                raise ValueError(
                    f"[crf_ner] Component '{self.name}': the teacher {cache.teacher} gives "
                    f"probability to tag sequences that the student forbids in the doc "
                    f"starting '{_doc_start(doc)}'. Train the student with the teacher's "
                    "constrained setting and tag scheme."
                )
            total = total + losses.double().sum()
        if not groups:
            return 0.0, [ops.alloc2f(*s.shape) for s in scores], {}
        grads = torch.autograd.grad(total, [flat, *params])
        lengths = numpy.asarray([len(doc) for doc in docs])
        d_scores = ops.unflatten(torch2xp(grads[0]), lengths)
        param_grads = {n: torch2xp(g) for n, g in zip(CRF_PARAMS, grads[1:], strict=True)}
        return float(total.detach()), d_scores, param_grads

    def _gold_loss(
        self,
        examples: list[Example],
        scores: list[Floats2d],
        golds: list[list[str | None] | None],
    ) -> tuple[float, list[Floats2d], dict[str, Any]]:
        """The CRF negative log-likelihood of the gold tags of the docs with ``golds``
        (with ``recall_cost``, the softmax-margin loss that charges each missed gold entity
        token that much)."""
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
        # An untrained label in the gold is trained by this loss (update then marks it).
        hidden = set(self.untrained_labels) - _gold_labels(golds)
        try:
            loss, d_flat, param_grads = crf_loss(
                crf, ops.flatten(scores), segments, gold, self._get_constraints(hidden),
                recall_cost=self.recall_cost, outside_tag=self.tag_names.index("O"),
            )  # fmt: skip
        except NonFiniteLoss as err:
            doc = docs[where[err.rows[0]][0]]
            if not err.scores_finite:
                raise ValueError(
                    f"[crf_ner] Component '{self.name}': the model's scores are not finite "
                    f"(NaN or infinity) in a batch with the doc starting '{_doc_start(doc)}': "
                    "training diverged. Lower the learning rate, keep gradient clipping on "
                    "([training.optimizer] grad_clip), or use mixed precision only on a GPU."
                ) from None
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
            if all(is_missing(tag) for tag in biluo):
                golds.append(None)
            else:
                golds.append(list(biluo))
        return golds

    def _gold_tag_ids(self, doc: Doc, biluo: list[str | None], offset: int = 0) -> numpy.ndarray:
        """Tag indices for the aligned BILUO tags of one CRF sequence (``doc`` from token
        ``offset`` on); -1 where the label is missing."""
        labels = set(self.labels)
        for tag in biluo:
            if not is_missing(tag) and tag != "O" and str(tag)[2:] not in labels:
                raise ValueError(
                    f"[crf_ner] Unknown entity label '{str(tag)[2:]}' in the gold annotation of "
                    f"the doc starting '{_doc_start(doc)}': component '{self.name}' has the "
                    f"labels {list(self.labels)}. Initialize it with all labels of the training "
                    f"data (e.g. [initialize.components.{self.name}.labels]); to train a trained "
                    f"component on a new label, add it first with add_label('{str(tag)[2:]}')."
                )
        problems = biluo_problems(biluo)
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
    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """Serialize the component: cfg (JSON), vocab, model (Thinc msgpack)."""
        self._store_labels_with_model()
        return super().to_bytes(exclude=exclude)

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """Save the component to a directory: files cfg, model (and vocab)."""
        self._store_labels_with_model()
        super().to_disk(path, exclude=exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> Any:
        """Load the component from bytes, all or nothing: everything is read and checked
        before the component changes, and a model that fails to load is rolled back. A
        damaged or mismatched model raises a ValueError that says so."""
        self._validate_serialization_attrs()
        try:
            msg = srsly.msgpack_loads(bytes_data)
            if not isinstance(msg, dict):
                raise ValueError(f"expected a mapping, got {type(msg).__name__}")
        except Exception as err:
            raise self._load_error("bytes", err) from err
        parts = {key: msg.get(key) for key in ("cfg", "vocab", "model") if key not in exclude}
        for key, value in parts.items():
            if not isinstance(value, bytes | str) and (key != "vocab" or value is not None):
                raise self._load_error("bytes", KeyError(f"no {key!r} in the data"))
        cfg = None
        if "cfg" in parts:
            try:
                cfg = srsly.json_loads(parts["cfg"])
            except Exception as err:
                raise self._load_error("bytes", err) from err
        self._load(cfg, parts.get("model"), "bytes")
        if parts.get("vocab") is not None:
            self.vocab.from_bytes(parts["vocab"], exclude=exclude)
        return self

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> Any:
        """Load the component from a directory, all or nothing (as ``from_bytes``); missing
        or damaged files raise a ValueError naming the component and the file."""
        self._validate_serialization_attrs()
        path = Path(path)
        if (path / "model.onnx").is_file() and not (path / "model").exists():
            raise ComponentLoadError(
                f"[crf_ner] '{path}' holds a crf_ner exported for onnxruntime (model.onnx), "
                "which the torch component can't load: load the exported pipeline as it was "
                "written (its config names the factory crf_ner_onnx), or export again from "
                "the original pipeline."
            )
        cfg = model_data = None
        if "cfg" not in exclude:
            cfg_path = path / "cfg"
            self._require_file(cfg_path, "its labels and tag scheme")
            try:
                cfg = srsly.read_json(cfg_path)
            except Exception as err:
                raise self._load_error(cfg_path, err) from err
        model_path = path / "model"
        if "model" not in exclude:
            self._require_file(model_path, "its weights")
            try:
                model_data = model_path.read_bytes()
            except OSError as err:
                raise self._load_error(model_path, err) from err
        self._load(cfg, model_data, model_path)
        if "vocab" not in exclude and (path / "vocab").exists():
            self.vocab.from_disk(path / "vocab", exclude=exclude)
        _warn_unresolvable_optimizer(path.parent / "config.cfg")
        return self

    def _require_file(self, file: Path, holds: str) -> None:
        if not file.is_file():
            raise ComponentLoadError(
                f"[crf_ner] Could not load component '{self.name}': the file '{file}' is "
                f"missing. It holds {holds}; save the component again (nlp.to_disk) or "
                "restore the file."
            )

    def _load_error(self, source: Any, err: Exception) -> "ComponentLoadError":
        where = "bytes" if source == "bytes" else f"file '{source}'"
        return ComponentLoadError(
            f"[crf_ner] Could not load component '{self.name}' from {where}: the data is damaged, "
            f"truncated or was not saved by this component ({type(err).__name__}: {err})"
        )

    def _load(self, cfg: Any, model_data: bytes | None, source: Any) -> None:
        """Check the loaded cfg and model against each other, then load them (or nothing)."""
        new_cfg = self._checked_cfg(cfg, source) if cfg is not None else dict(self.cfg)
        labels, scheme = list(new_cfg["labels"]), get_scheme(new_cfg["tag_scheme"])
        n_tags = len(scheme.tag_names(labels))
        if model_data is None:
            if self._n_model_tags() is not None:
                crf = self.model.get_ref("crf")
                self._check_tags(
                    labels, scheme, n_tags, self._n_model_tags(), crf.attrs.get(LABELS_ATTR),
                    crf.attrs.get(SCHEME_ATTR), source,
                )  # fmt: skip
        else:
            self._load_model(model_data, labels, scheme, n_tags, source)
        self.cfg = new_cfg
        self._store_labels_with_model()
        if new_cfg.get("trained_constrained") and not self.constrained:
            logger.warning(
                "[crf_ner] Component '%s' was trained with constrained = true but is loaded "
                "with constrained = false: the CRF may now decode invalid tag sequences "
                "(e.g. I- after O), which can lower its accuracy a lot. Leave constrained = "
                "true unless you mean to compare.",
                self.name,
            )

    def _checked_cfg(self, cfg: Any, source: Any) -> dict[str, Any]:
        where = "bytes" if source == "bytes" else f"'{Path(source).parent / 'cfg'}'"
        if not isinstance(cfg, dict) or not isinstance(cfg.get("labels", []), list):
            raise ComponentLoadError(
                f"[crf_ner] Invalid cfg of component '{self.name}' in {where}: {cfg!r}"
            )
        new_cfg = {**self.cfg, **cfg}
        try:
            new_cfg["tag_scheme"] = self._check_scheme(new_cfg["tag_scheme"])
            get_scheme(new_cfg["tag_scheme"]).tag_names(new_cfg["labels"])
        except ValueError as err:
            raise ComponentLoadError(
                f"{err} (in the cfg of component '{self.name}', {where})"
            ) from None
        new_cfg["labels"] = sorted(new_cfg["labels"])
        return new_cfg

    def _check_tags(
        self,
        labels: list[str],
        scheme: TagScheme,
        n_tags: int,
        model_tags: int | None,
        model_labels: Any,
        model_scheme: Any,
        source: Any,
    ) -> None:
        """The cfg's labels and scheme must be those the model's weights were trained for."""
        where = "bytes" if source == "bytes" else repr(str(source))
        if model_labels is not None and (
            list(model_labels) != labels or model_scheme != scheme.name
        ):
            raise ComponentLoadError(
                f"[crf_ner] The cfg of component '{self.name}' has the labels {labels} "
                f"({scheme.name}), but its model ({where}) was trained for the labels "
                f"{list(model_labels)} ({model_scheme}): the model and cfg files do not belong "
                "together. Restore the cfg saved with the model."
            )
        if model_tags is not None and model_tags != n_tags:
            raise ComponentLoadError(
                f"[crf_ner] The model of component '{self.name}' loaded from {where} has "
                f"{model_tags} outputs, but its labels {labels} need {n_tags} tags in the "
                f"{scheme.name} scheme: the model and cfg files do not belong together."
            )

    def _load_model(
        self, data: bytes, labels: list[str], scheme: TagScheme, n_tags: int, source: Any
    ) -> None:
        """Load the weights after checking that they fit this model and the cfg; restore
        the old weights if loading still fails half-way (e.g. damaged LSTM weights)."""
        nodes = list(self.model.walk())
        try:
            msg = srsly.msgpack_loads(data)
            if not isinstance(msg, dict) or not {"nodes", "attrs", "params", "shims"} <= set(msg):
                raise ValueError("not a Thinc model")
        except Exception as err:
            raise self._load_error(source, err) from err
        try:
            saved = _saved_model_info(msg, len(nodes))
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise self._mismatch_error(source, err) from err
        self._check_tags(labels, scheme, n_tags, *saved, source)
        current = self._n_model_tags()
        if current is not None and saved[0] is not None and current != saved[0]:
            raise ComponentLoadError(
                f"[crf_ner] Can't load a model with {saved[0]} tags (labels {labels}) into "
                f"component '{self.name}', whose model has {current} (labels "
                f"{list(self.labels)}): load it into a new component (spacy.load, or "
                "nlp.add_pipe then from_bytes/from_disk), not one initialized or grown with "
                "other labels."
            )
        try:
            _check_fits(msg, nodes)
        except (ValueError, KeyError, TypeError) as err:
            raise self._mismatch_error(source, err) from err
        backup = self.model.to_bytes() if self._is_trained() else None
        try:
            self.model.from_bytes(data)
        except Exception as err:
            if backup is not None:
                self.model.from_bytes(backup)
            raise self._load_error(source, err) from err
        self._rehearsal_model = None  # it was a copy of other weights

    def _mismatch_error(self, source: Any, err: Exception) -> "ComponentLoadError":
        where = "bytes" if source == "bytes" else f"file '{source}'"
        return ComponentLoadError(
            f"[crf_ner] The model of component '{self.name}' in {where} does not fit the "
            f"component's configured model: {err}. Load it with the model config it was "
            "saved with (the pipeline's config.cfg)."
        )


def _saved_model_info(msg: dict, n_nodes: int) -> tuple[int | None, Any, Any]:
    """From a model's msgpack data: its number of tags, and the labels and scheme saved with
    it (None for pipelines saved before they were)."""
    if len(msg["nodes"]) != n_nodes:
        raise ValueError(
            f"it has {len(msg['nodes'])} layers, the configured model {n_nodes}: a model "
            "of another architecture"
        )
    refs = msg["nodes"][0]["refs"]
    if refs.get("crf") is None or refs.get("output_layer") is None:
        raise ValueError("not a crf_ner model (no 'crf' or 'output_layer' layer)")
    n_tags = msg["nodes"][refs["output_layer"]]["dims"].get("nO")
    attrs = msg["attrs"][refs["crf"]]
    labels, scheme = (
        srsly.msgpack_loads(attrs[key]) if key in attrs else None
        for key in (LABELS_ATTR, SCHEME_ATTR)
    )
    return n_tags, labels, scheme


def _check_fits(msg: dict, nodes: list[Model]) -> None:
    """Check that a model's msgpack data has this model's layers and sizes, so that loading
    it can't fail half-way on them (Thinc sets each layer in turn)."""
    for i, (node, info, shims) in enumerate(zip(nodes, msg["nodes"], msg["shims"], strict=True)):
        name = node.name if len(node.name) <= 40 else "..." + node.name[-37:]
        if len(shims) != len(node.shims):
            raise ValueError(f"layer {i} ('{name}') does not match the configured model")
        for dim, value in info["dims"].items():
            if value is not None and node.has_dim(dim) and node.get_dim(dim) != value:
                raise ValueError(
                    f"layer {i} ('{name}') has {dim} = {value}, the configured model "
                    f"{node.get_dim(dim)}: a model of another size"
                )


def _warn_unresolvable_optimizer(config_path: Path) -> None:
    """Warn about a pipeline saved from a config whose optimizer refers to another section.

    ``nlp.update``, ``resume_training`` and ``create_optimizer`` resolve the saved
    ``[training.optimizer]`` on its own, where e.g. ``total_steps = ${training.max_steps}``
    (as the shipped configs had it before) is not filled in and fails with a ConfigValidationError.
    """
    try:
        optimizer = Config().from_disk(config_path, interpolate=False)["training"]["optimizer"]
    except Exception:
        return
    found = list(_references(optimizer, "training.optimizer"))
    if found:
        logger.warning(
            "[crf_ner] The pipeline's config %s sets %s: nlp.update, nlp.resume_training and "
            "nlp.create_optimizer can't resolve it on the loaded pipeline. Before training it "
            "further, run nlp.config = nlp.config.interpolate(), or write a number there.",
            config_path,
            ", ".join(f"{key} = {value}" for key, value in found),
        )


def _references(section: Any, prefix: str) -> Iterable[tuple[str, str]]:
    """The (key, value) pairs of a config section whose values refer to other sections."""
    if isinstance(section, dict):
        for key, value in section.items():
            yield from _references(value, f"{prefix}.{key}")
    elif isinstance(section, str) and "${" in section:
        yield prefix, section
