"""No entity begins or ends on a whitespace token: in decoding, n-best, entity probabilities
and candidates, and the result is still the best path (and the exact distribution) over the
allowed paths.

The model here has no learned encoder: a test tok2vec gives each token three features (1,
is_space, follows a space) and the emission layer's weights are set so that whitespace
tokens want to open an entity and the token after them wants to close it, which is what a
trained pipeline did on "Paris\\n\\n" and on paragraphs joined by blank lines.
"""

from __future__ import annotations

import itertools
import math

import numpy
import pytest
import torch
from spacy.lang.en import English
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry
from thinc.api import Model

from spacy_crf_ner.crf_batch import crf_params
from spacy_crf_ner.tags import SCHEME_NAMES, get_scheme

TEXTS = [
    "Paris\n\n",
    "Rome.\n\n\nMeanwhile Berlin",
    "New\nYork is big",
    "\n\nOslo\n \n",
]


@registry.architectures("test_whitespace.SpaceFeatures.v1")
def space_features() -> Model:
    """Per token: (1, is_space, the previous token is a space)."""

    def forward(model: Model, docs: list[Doc], is_train: bool):
        out = []
        for doc in docs:
            space = doc.to_array("IS_SPACE").astype("float32").reshape(-1)
            after = numpy.concatenate([[0.0], space[:-1]]).astype("float32")[: len(doc)]
            feats = numpy.stack([numpy.ones(len(doc), dtype="float32"), space, after], 1)
            out.append(model.ops.asarray2f(feats.reshape(len(doc), 3)))
        return out, lambda d_out: []

    return Model("space_features", forward, dims={"nO": 3})


def make_nlp(scheme_name: str, seed: int = 0, **config):
    """A crf_ner with one label whose emissions favour entity edges on whitespace."""
    nlp = English()
    model = {
        "@architectures": "spacy_crf_ner.CRFTagger.v1",
        "tok2vec": {"@architectures": "test_whitespace.SpaceFeatures.v1"},
    }
    ner = nlp.add_pipe("crf_ner", config={"tag_scheme": scheme_name, "model": model, **config})
    ner.add_label("LOC")
    nlp.initialize(lambda: [Example(nlp.make_doc("x"), nlp.make_doc("x"))])
    scheme = get_scheme(scheme_name)
    roles = dict(zip(scheme.prefixes, "BILU", strict=False))  # prefix letter -> role
    opens = "I" if scheme.name == "IOB1" else "B"  # the role that opens an entity
    weights = numpy.zeros((len(ner.tag_names), 3), dtype="float32")
    for k, name in enumerate(ner.tag_names):
        role = "O" if name == "O" else roles[name.split("-")[0]]
        plain = {"O": 0.0, "U": 3.0}.get(role, 3.0 if role == opens and "U" not in roles else 0.0)
        space = {opens: 5.0, "U": 4.0}.get(role, 0.0)
        after = 5.0 if role == ("L" if "L" in roles else "I") else 0.0
        # feature 0 is always 1: the plain score; the others add the difference.
        weights[k] = [plain, space - plain, after - plain]
    rng = numpy.random.RandomState(seed)
    weights += rng.normal(scale=0.1, size=weights.shape).astype("float32")
    output = ner.model.get_ref("output_layer")
    output.set_param("W", weights)
    output.set_param("b", numpy.zeros(len(ner.tag_names), dtype="float32"))
    crf = ner.model.get_ref("crf")
    for name in ("transitions", "start", "end"):
        value = crf.get_param(name)
        crf.set_param(name, rng.normal(scale=0.5, size=value.shape).astype("float32"))
    return nlp, ner


def edges_on_space(doc: Doc, spans) -> list[tuple[int, int, str]]:
    """The spans (start, end, label) that begin or end on a whitespace token."""
    out = []
    for span in spans:
        start, end, label = span if isinstance(span, tuple) else (span.start, span.end, span.label_)
        if doc[start].is_space or doc[end - 1].is_space:
            out.append((start, end, label))
    return out


@pytest.mark.parametrize("scheme_name", SCHEME_NAMES)
def test_no_entity_edge_on_whitespace(scheme_name):
    nlp, ner = make_nlp(scheme_name, entity_probs=True, candidate_threshold=1e-6)
    docs = list(nlp.pipe(TEXTS))
    assert [e.text for e in docs[0].ents] == ["Paris"]
    for doc in docs:
        assert not edges_on_space(doc, doc.ents), [e.text for e in doc.ents]
        assert list(doc.spans["crf_ner"]) == list(doc.ents)
        assert all(0.0 < p <= 1.0 for p in doc.spans["crf_ner"].attrs["scores"])
        candidates = doc.spans["crf_ner_candidates"]
        assert len(candidates) > 0
        assert not edges_on_space(doc, candidates), [c.text for c in candidates]
    for doc, analyses in zip(docs, ner.nbest([nlp.make_doc(t) for t in TEXTS], k=8), strict=True):
        assert analyses
        for ents, _ in analyses:
            assert not edges_on_space(doc, ents), [e.text for e in ents]


def allowed_paths(doc: Doc, scheme, names: list[str]):
    """Every tag path the component may output for ``doc``, with its entities: valid in the
    scheme, no entity edge on a whitespace token and, in BIO and IOB1 (no end tags), no
    whitespace token inside an entity either."""
    for path in itertools.product(range(len(names)), repeat=len(doc)):
        tags = [names[i] for i in path]
        if scheme.validate(tags):
            continue
        spans = scheme.tags_to_spans(tags)
        if edges_on_space(doc, spans):
            continue
        if scheme.name in ("BIO", "IOB1") and any(
            doc[i].is_space for s, e, _ in spans for i in range(s, e)
        ):
            continue
        yield path, spans


def brute_force(nlp, ner, text: str):
    """(probability, entities) of every allowed path, most probable first."""
    doc = nlp.make_doc(text)
    emissions = torch.tensor(ner.model.predict([doc])[0], dtype=torch.float64)
    trans, start, end = (p.double() for p in crf_params(ner.model.get_ref("crf")))
    scored = []
    for path, spans in allowed_paths(doc, ner.scheme, list(ner.tag_names)):
        score = start[path[0]] + end[path[-1]] + emissions[0, path[0]]
        for t in range(1, len(path)):
            score = score + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        scored.append((float(score), frozenset(spans)))
    log_z = torch.logsumexp(torch.tensor([s for s, _ in scored]), 0).item()
    return sorted(((math.exp(s - log_z), spans) for s, spans in scored), key=lambda x: -x[0])


@pytest.mark.parametrize("scheme_name", ["BILUO", "BIO", "IOB1", "BMES"])
@pytest.mark.parametrize("seed", [0, 1])
def test_best_allowed_path_and_its_distribution(scheme_name, seed):
    """Decoding, n-best, entity probabilities, candidates and the path probability are the
    exact ones of the CRF restricted to the allowed paths (checked by enumeration)."""
    nlp, ner = make_nlp(scheme_name, seed, entity_probs=True, candidate_threshold=1e-4)
    for text in TEXTS[:3]:
        expected = brute_force(nlp, ner, text)
        doc = nlp(text)
        best_prob, best_spans = expected[0]
        found = {(e.start, e.end, e.label_) for e in doc.ents}
        assert found == set(best_spans), text
        assert doc._.crf_path_prob == pytest.approx(best_prob, rel=1e-4)
        marginal = {}
        for prob, spans in expected:
            for span in spans:
                marginal[span] = marginal.get(span, 0.0) + prob
        for ent in doc.ents:
            key = (ent.start, ent.end, ent.label_)
            assert ent._.crf_prob == pytest.approx(marginal[key], rel=1e-4, abs=1e-6)
        candidates = doc.spans["crf_ner_candidates"]
        scores = candidates.attrs["scores"]
        got = {(c.start, c.end, c.label_): p for c, p in zip(candidates, scores, strict=True)}
        wanted = {s: p for s, p in marginal.items() if p >= 2e-4}
        assert set(wanted) <= set(got), text
        assert all(marginal.get(s, 0.0) >= 0.5e-4 for s in got), text
        for span, prob in got.items():
            assert prob == pytest.approx(marginal[span], rel=1e-4, abs=1e-6)
        analyses = ner.nbest([nlp.make_doc(text)], k=5)[0]
        assert len(analyses) == min(5, len(expected))
        for (ents, prob), (want_prob, want_spans) in zip(analyses, expected, strict=False):
            assert {(e.start, e.end, e.label_) for e in ents} == set(want_spans), text
            assert prob == pytest.approx(want_prob, rel=1e-4)


def test_whitespace_may_be_inside_an_entity_with_end_tags():
    """With explicit end tags a line break may sit inside a name ("New\\nYork"); in BIO a
    whitespace token is never part of an entity."""
    for scheme_name, inside in [("BILUO", True), ("BIO", False)]:
        nlp, ner = make_nlp(scheme_name, entity_probs=True)
        doc = nlp.make_doc("New\nYork")
        emissions = numpy.full((3, len(ner.tag_names)), -5.0, dtype="float32")
        wanted = ner.scheme.spans_to_tags([(0, 3, "LOC")], 3)
        for t, tag in enumerate(wanted):
            emissions[t, ner.tag_names.index(tag)] = 5.0
        predictions = ner.decode([doc], [emissions], scored=True)
        ner.set_annotations([doc], predictions)
        spans = [(e.start, e.end) for e in doc.ents]
        assert ((0, 3) in spans) is inside
        assert not edges_on_space(doc, doc.ents)


def test_training_is_not_restricted():
    """The rule is applied in decoding only: a gold entity ending on a whitespace token
    (e.g. character offsets that include a newline) still has a finite loss."""
    for scheme_name in ("BILUO", "BIO"):
        nlp, ner = make_nlp(scheme_name)
        doc = nlp.make_doc("Paris\n\n")
        example = Example.from_dict(doc, {"entities": [(0, 7, "LOC")]})
        assert [t.text for t in example.reference.ents[0]] == ["Paris", "\n\n"]
        losses = nlp.update([example])
        assert math.isfinite(losses["crf_ner"]) and losses["crf_ner"] > 0
