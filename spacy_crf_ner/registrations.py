"""Entry-point module: the ``crf_ner`` factory.

spaCy imports this module whenever it enumerates factories (``spacy_factories`` entry
point), so it is kept light: the component class, and with it the CRF code, is imported
only when a component is actually created. It imports no torch itself (Thinc imports torch
on its own when it is installed, so ``import spacy`` already pays for that).
"""

from collections.abc import Callable
from typing import Any

from spacy.language import Language
from thinc.api import Config, Model

# Registers the architectures, layers, callbacks and the scorer even when the package's entry
# points are not installed (all light: no torch, no transformers at import).
from . import architectures, transformer  # noqa: F401
from .scorer import make_entity_scorer  # noqa: F401

__all__ = ["DEFAULT_CRF_NER_MODEL", "make_crf_ner"]

DEFAULT_CRF_NER_MODEL = """
[model]
@architectures = "spacy_crf_ner.CRFTagger.v1"
nO = null
dropout = 0.0

[model.tok2vec]
@architectures = "spacy_crf_ner.BiLSTMEncoder.v1"
width = 96
embed_size = 2000
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
include_static_vectors = false
char_features = 0
lstm_width = 96
lstm_depth = 1
lstm_dropout = 0.0
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_CRF_NER_MODEL)["model"]


@Language.factory(
    "crf_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_MODEL,
        "tag_scheme": "BILUO",
        "constrained": True,
        "respect_sentences": True,
        "entity_probs": False,
        "spans_key": "crf_ner",
        "candidate_threshold": None,
        "max_candidate_length": 10,
        "temperature": 1.0,
        "distill_weight": 0.5,
        "distill_temperature": 1.0,
        "distill_hard": False,
        "recall_cost": 0.0,
        "scorer": {"@scorers": "spacy_crf_ner.entity_scorer.v1"},
    },
    default_score_weights={
        "ents_f": 1.0,
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_per_type": None,
    },
)
def make_crf_ner(
    nlp: Language,
    name: str,
    model: Model,
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
    scorer: Callable | None = None,
) -> Any:
    """Create a CRF entity recognizer (``CRFEntityRecognizer``).

    model: a Thinc model from docs to per-token tag scores with a CRF layer, e.g.
        ``spacy_crf_ner.CRFTagger.v1``; its output width is set from the labels.
    tag_scheme: how entities are encoded as tags: BILUO (default), BIO, IOB1, BIOES, BMES or
        BMEWO. Saved with the component, since the model's tag indices depend on it.
    constrained: forbid tag sequences that are invalid in the scheme, in training and
        decoding (e.g. BILUO I-X after O).
    respect_sentences: when docs have sentence boundaries, decode each sentence as its own
        sequence, so that no entity crosses a boundary.
    entity_probs: give every predicted entity its exact probability under the CRF
        (``ent._.crf_prob``, and ``doc.spans[spans_key]`` with ``attrs["scores"]``) and each
        doc its best-path probability (``doc._.crf_path_prob``). Off: nothing is computed.
    spans_key: the ``doc.spans`` key for the scored entities.
    candidate_threshold: if set, also store in ``doc.spans[spans_key + "_candidates"]`` every
        span of up to ``max_candidate_length`` tokens whose probability is at least this,
        including spans not on the best path (overlaps allowed), with their scores.
    max_candidate_length: the longest candidate span, in tokens (at least 1).
    temperature: divide every CRF score by this before computing probabilities (entity,
        candidate, path and n-best probabilities); > 1 softens over-confident ones. The
        predicted entities do not change. ``python -m spacy_crf_ner calibrate`` fits it on
        a dev set.
    distill_weight: for training examples that carry a teacher CRF (the reader
        ``spacy_crf_ner.TeacherCorpus.v1``): the loss is this times the distillation loss
        plus (1 - this) times the gold NLL (none for a doc without gold entities).
    distill_temperature: the teacher's scores are divided by this before its marginals are
        taken; > 1 passes on more of its uncertainty.
    distill_hard: learn the teacher's Viterbi path as hard silver labels (self-training)
        instead of its whole distribution (KL between the two CRFs).
    recall_cost: > 0 trains with the softmax-margin loss (Gimpel & Smith 2010) instead of
        the likelihood: while training, every tag sequence is scored this much higher per
        gold entity token it tags O, so the model learns to keep a margin against missing
        entities (a recall-oriented cost). Decoding is unchanged. 0: the CRF likelihood.
    scorer: the scoring method, ``spacy_crf_ner.entity_scorer.v1`` by default.

    Every setting is checked when the component is made (a ValueError names it).
    """
    from .pipe import CRFEntityRecognizer

    return CRFEntityRecognizer(
        nlp.vocab,
        model,
        name,
        tag_scheme=tag_scheme,
        constrained=constrained,
        respect_sentences=respect_sentences,
        entity_probs=entity_probs,
        spans_key=spans_key,
        candidate_threshold=candidate_threshold,
        max_candidate_length=max_candidate_length,
        temperature=temperature,
        distill_weight=distill_weight,
        distill_temperature=distill_temperature,
        distill_hard=distill_hard,
        recall_cost=recall_cost,
        scorer=scorer,
    )
