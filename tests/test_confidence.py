"""Entity probabilities against brute-force enumeration for every tag scheme."""

from __future__ import annotations

import itertools

import pytest
import torch

from spacy_crf_ner.confidence import candidate_entities, entity_probabilities
from spacy_crf_ner.crf import CRFConstraints
from spacy_crf_ner.tags import SCHEME_NAMES, get_scheme


def valid_paths(scheme, names, length):
    for path in itertools.product(range(len(names)), repeat=length):
        tags = [names[i] for i in path]
        if not scheme.validate(tags):
            yield path, scheme.tags_to_spans(tags)


@pytest.mark.parametrize("scheme_name", SCHEME_NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_entity_probabilities_equal_brute_force(scheme_name, seed):
    scheme = get_scheme(scheme_name)
    labels = ["A", "B"] if scheme_name in ("IOB1", "BIO") else ["A"]
    names = scheme.tag_names(labels)
    num_tags, length = len(names), 4
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(2, length, num_tags, generator=gen, dtype=torch.float64) * 2
    params = tuple(
        torch.randn(shape, generator=gen, dtype=torch.float64)
        for shape in [(num_tags, num_tags), (num_tags,), (num_tags,)]
    )
    constraints = CRFConstraints(*(torch.as_tensor(m) for m in scheme.allowed_transitions(names)))
    mask = torch.tensor([[True] * length, [True] * 3 + [False]])
    entities = candidate_entities([length, 3], labels, max_length=length)
    probs = entity_probabilities(emissions, mask, params, constraints, scheme, names, entities)
    trans, start, end = params
    for row, n in enumerate([length, 3]):
        scores = {}
        for path, spans in valid_paths(scheme, names, n):
            score = start[path[0]] + end[path[-1]] + emissions[row, 0, path[0]]
            for t in range(1, n):
                score = score + trans[path[t - 1], path[t]] + emissions[row, t, path[t]]
            scores[path] = (score, set(spans))
        total = torch.logsumexp(torch.stack([s for s, _ in scores.values()]), 0)
        for i, (r, s, e, label) in enumerate(entities):
            if r != row:
                continue
            expected = sum(
                (torch.exp(v - total) for v, spans in scores.values() if (s, e, label) in spans),
                torch.tensor(0.0, dtype=torch.float64),
            )
            torch.testing.assert_close(probs[i], expected, msg=f"{scheme_name} {(s, e, label)}")


def test_candidates_enumerate_spans():
    assert candidate_entities([2], ["X"], 3) == [(0, 0, 1, "X"), (0, 0, 2, "X"), (0, 1, 2, "X")]
    assert candidate_entities([3, 0], ["X", "Y"], 1) == [
        (0, t, t + 1, lab) for t in range(3) for lab in ("X", "Y")
    ]


# ------------------------------------------------------------------ the component


@pytest.fixture(scope="module")
def overfit():
    """A small crf_ner overfitted on a few docs (one torch thread: see test_pipe)."""
    from spacy.lang.en import English
    from spacy.training import Example
    from spacy.util import fix_random_seed

    from tests.test_pipe import SMALL_MODEL, TRAIN_DATA

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fix_random_seed(0)
    nlp = English()
    nlp.add_pipe("crf_ner", config={"model": SMALL_MODEL})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN_DATA]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(80):
        nlp.update(examples, sgd=optimizer)
    yield nlp, examples
    torch.set_num_threads(threads)


def test_switch_off_leaves_spans_untouched(overfit):
    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    assert ner.entity_probs is False and ner.candidate_threshold is None
    doc = nlp(examples[3].reference.text)
    assert doc.ents and "crf_ner" not in doc.spans
    assert all(ent._.crf_prob is None for ent in doc.ents) and doc._.crf_path_prob is None


def test_entity_probabilities_on_overfit_model(overfit):
    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    ner.entity_probs = True
    try:
        docs = list(nlp.pipe([eg.reference.text for eg in examples]))
    finally:
        ner.entity_probs = False
    for doc, eg in zip(docs, examples, strict=True):
        gold = [(e.start, e.end, e.label_) for e in eg.reference.ents]
        assert [(e.start, e.end, e.label_) for e in doc.ents] == gold
        scores = doc.spans["crf_ner"].attrs["scores"]
        assert len(scores) == len(doc.ents) == len(doc.spans["crf_ner"])
        for ent, score in zip(doc.ents, scores, strict=True):
            assert ent._.crf_prob == score
            assert 0.9 < score <= 1.0  # the gold entities of an overfit model are near-certain
        assert 0.0 < doc._.crf_path_prob <= 1.0
        # The path probability bounds every entity on it from below.
        assert all(doc._.crf_path_prob <= s + 1e-9 for s in scores)


def test_entity_probabilities_match_engine(overfit):
    """The component's numbers are the engine's exact span posteriors for its emissions."""
    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    text = "Angela Merkel visited London and Paris."
    ner.entity_probs = True
    try:
        doc = nlp(text)
    finally:
        ner.entity_probs = False
    expected = engine_entity_probs(nlp, doc)
    assert doc.spans["crf_ner"].attrs["scores"] == pytest.approx(expected, abs=1e-6)


def engine_entity_probs(nlp, doc, temperature=1.0):
    """The engine's probabilities of ``doc.ents`` for the component's emissions of its text,
    with emissions and CRF params divided by ``temperature``."""
    from spacy_crf_ner.confidence import entity_probabilities
    from spacy_crf_ner.layers import _crf_params

    ner = nlp.get_pipe("crf_ner")
    emissions = torch.tensor(ner.model.predict([nlp.make_doc(doc.text)])[0]).unsqueeze(0)
    mask = torch.ones(emissions.shape[:2], dtype=torch.bool)
    crf = ner.model.get_ref("crf")
    params = tuple(p.detach() / temperature for p in _crf_params(crf, False))
    entities = [(0, e.start, e.end, e.label_) for e in doc.ents]
    return entity_probabilities(
        emissions / temperature, mask, params, ner._get_constraints(), ner.scheme,
        ner.tag_names, entities,
    ).tolist()  # fmt: skip


def test_candidates_include_spans_off_the_best_path(overfit):
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    ner.candidate_threshold = 0.001
    try:
        doc = nlp("Shaka Khan bought a startup in Berlin and London.")
    finally:
        ner.candidate_threshold = None
    group = doc.spans["crf_ner_candidates"]
    scores = group.attrs["scores"]
    assert len(group) == len(scores) > 0
    assert scores == sorted(scores, reverse=True)
    assert all(0.001 <= s <= 1.0 for s in scores)
    found = {(s.start, s.end, s.label_) for s in group}
    assert {(e.start, e.end, e.label_) for e in doc.ents} <= found
    assert "crf_ner" not in doc.spans  # entity_probs stayed off


def test_nbest_analyses(overfit):
    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    docs = [nlp.make_doc(eg.reference.text) for eg in examples] + [nlp.make_doc("")]
    analyses = ner.nbest(docs, k=4)
    assert len(analyses) == len(docs)
    for eg, found in zip(examples, analyses, strict=False):
        probs = [p for _, p in found]
        assert probs == sorted(probs, reverse=True)
        assert 0.0 < sum(probs) <= 1.0 + 1e-9
        best = [(e.start, e.end, e.label_) for e in found[0][0]]
        assert best == [(e.start, e.end, e.label_) for e in eg.reference.ents]
    assert analyses[-1] == [([], 1.0)]


def test_invalid_candidate_threshold():
    from spacy.lang.en import English

    with pytest.raises(ValueError, match="candidate_threshold"):
        English().add_pipe("crf_ner", config={"candidate_threshold": 1.5})


def test_rank_documents_orders_by_uncertainty(overfit, tmp_path):
    import json
    import subprocess
    import sys

    from spacy_crf_ner.rank import rank_documents

    nlp, examples = overfit
    texts = [eg.reference.text for eg in examples] + ["Zorblat quixed the flumbering vorp."]
    records = rank_documents(nlp, texts, by="path")
    assert sorted(r["index"] for r in records) == list(range(len(texts)))
    values = [r["uncertainty"] for r in records]
    assert values == sorted(values, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert nlp.get_pipe("crf_ner").entity_probs is False  # restored
    by_entity = rank_documents(nlp, texts, by="entity")
    for record in by_entity:
        probs = [e["prob"] for e in record["entities"]]
        assert record["uncertainty"] == pytest.approx(1 - min(probs) if probs else 0.0, abs=1e-6)
    # Through the CLI on a saved pipeline.
    nlp.to_disk(tmp_path / "model")
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
    out = tmp_path / "queue.jsonl"
    subprocess.run(
        [sys.executable, "-m", "spacy_crf_ner", "rank", str(tmp_path / "model"),
         str(tmp_path / "in.txt"), "--output", str(out)],
        check=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    lines = [json.loads(line) for line in out.read_text(encoding="utf8").splitlines()]
    assert [r["text"] for r in lines] == [r["text"] for r in records]


# ------------------------------------------------------------------ temperature


def test_temperature_scales_all_scores(overfit):
    """At temperature T the probabilities are the engine's for emissions and CRF params / T;
    the entities do not change, and the over-confident path probability softens."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    text = "Angela Merkel visited London and Paris."
    ner.entity_probs = True
    try:
        cold = nlp(text)
        ner.temperature = 3.0
        warm = nlp(text)
    finally:
        ner.entity_probs, ner.temperature = False, 1.0
    assert [(e.start, e.end, e.label_) for e in warm.ents] == [
        (e.start, e.end, e.label_) for e in cold.ents
    ]
    expected = engine_entity_probs(nlp, warm, temperature=3.0)
    assert warm.spans["crf_ner"].attrs["scores"] == pytest.approx(expected, abs=1e-6)
    assert warm._.crf_path_prob < cold._.crf_path_prob
    # n-best: same ranking, softer probabilities.
    ner.temperature = 3.0
    try:
        (warm_best,) = ner.nbest([nlp.make_doc(text)], k=3)
    finally:
        ner.temperature = 1.0
    (cold_best,) = ner.nbest([nlp.make_doc(text)], k=3)
    assert [[(e.start, e.end, e.label_) for e in ents] for ents, _ in warm_best] == [
        [(e.start, e.end, e.label_) for e in ents] for ents, _ in cold_best
    ]
    assert warm_best[0][1] < cold_best[0][1] and sum(p for _, p in warm_best) <= 1.0 + 1e-9
    assert warm_best[0][1] == pytest.approx(warm._.crf_path_prob, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_temperature(bad):
    from spacy.lang.en import English

    with pytest.raises(ValueError, match="temperature"):
        English().add_pipe("crf_ner", config={"temperature": bad})


def _calibration_gold(nlp, examples):
    """The training docs (predicted right), and copies whose gold labels are all changed
    (predicted wrong with the same high confidence): an over-confident model on this set."""
    from spacy.tokens import Span

    gold = [eg.reference for eg in examples]
    relabelled = []
    for doc in gold:
        copy = doc.copy()
        copy.set_ents([Span(copy, e.start, e.end, label="MISC") for e in doc.ents])
        relabelled.append(copy)
    return gold + relabelled


def test_fit_temperature_softens_an_over_confident_model(overfit):
    import numpy

    from spacy_crf_ner.calibrate import binary_log_loss, fit_temperature

    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    gold = _calibration_gold(nlp, examples)
    result = fit_temperature(nlp, gold)
    assert ner.temperature == 1.0 and ner.entity_probs is False  # restored
    assert result.accuracy == pytest.approx(0.5)
    at_1 = next(s for s in result.scores if s.temperature == 1.0)
    assert result.best.log_loss == min(s.log_loss for s in result.scores)
    assert result.best.temperature > 1.0
    assert result.best.log_loss < at_1.log_loss and result.best.ece < at_1.ece
    # The table's number is what the pipeline gives with that temperature set.
    ner.entity_probs, ner.temperature = True, result.best.temperature
    try:
        docs = list(nlp.pipe([doc.text for doc in gold]))
    finally:
        ner.entity_probs, ner.temperature = False, 1.0
    probs, correct = [], []
    for doc, ref in zip(docs, gold, strict=True):
        truth = {(e.start, e.end, e.label_) for e in ref.ents}
        for ent in doc.ents:
            probs.append(ent._.crf_prob)
            correct.append((ent.start, ent.end, ent.label_) in truth)
    assert len(probs) == result.n_entities
    assert binary_log_loss(numpy.array(probs), numpy.array(correct, dtype=float)) == (
        pytest.approx(result.best.log_loss, rel=1e-6)
    )
