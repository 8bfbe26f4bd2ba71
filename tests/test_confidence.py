"""Entity probabilities, candidates, n-best analyses, ranking and temperature.

The engine's numbers are checked against brute-force enumeration of every tag path: for
every tag scheme on random scores, and for the component (a small overfitted model, the
``overfit`` fixture of conftest.py) on short docs, with and without sentence boundaries.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy
import pytest
import torch
from spacy.tokens import Doc

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


# ------------------------------------------------------------------ brute force on the component


class Enumerated:
    """Every tag path of one CRF sequence that the tag scheme allows, with its probability
    under the component's CRF, by enumeration (K^n paths: short sequences only)."""

    def __init__(self, ner, emissions, temperature: float = 1.0) -> None:
        crf = ner.model.get_ref("crf")
        trans, start, end = (
            numpy.asarray(crf.get_param(name), dtype="float64")
            for name in ("transitions", "start", "end")
        )
        emissions = numpy.asarray(emissions, dtype="float64")
        n, k = emissions.shape
        assert k**n <= 500_000, "too long to enumerate"
        paths = numpy.indices((k,) * n).reshape(n, -1).T  # (K^n, n): every tag sequence
        ok_trans, ok_start, ok_end = ner.scheme.allowed_transitions(ner.tag_names)
        valid = ok_start[paths[:, 0]] & ok_end[paths[:, -1]]
        score = start[paths[:, 0]] + end[paths[:, -1]] + emissions[numpy.arange(n), paths].sum(1)
        for t in range(1, n):
            valid &= ok_trans[paths[:, t - 1], paths[:, t]]
            score += trans[paths[:, t - 1], paths[:, t]]
        score = score[valid] / temperature
        self.paths = paths[valid]
        self.probs = numpy.exp(score - numpy.logaddexp.reduce(score))
        self.names, self.scheme = ner.tag_names, ner.scheme
        self._spans: dict[tuple[int, int, str], float] | None = None

    def entities(self, rank: int) -> list[tuple[int, int, str]]:
        """The entities of the ``rank``-th most probable path (0: the best)."""
        path = self.paths[numpy.argsort(-self.probs, kind="stable")[rank]]
        return self.scheme.tags_to_spans([self.names[i] for i in path])

    def path_prob(self, rank: int = 0) -> float:
        return float(numpy.sort(self.probs)[::-1][rank])

    @property
    def spans(self) -> dict[tuple[int, int, str], float]:
        """The probability of every labelled span: the mass of the paths it is an entity of."""
        if self._spans is None:
            found: dict[tuple[int, int, str], float] = defaultdict(float)
            for path, prob in zip(self.paths, self.probs, strict=True):
                for span in self.scheme.tags_to_spans([self.names[i] for i in path]):
                    found[span] += prob
            self._spans = dict(found)
        return self._spans


def emissions_of(nlp, doc: Doc) -> numpy.ndarray:
    """The component's emissions for ``doc`` (the encoder sees the whole doc)."""
    return numpy.asarray(nlp.get_pipe("crf_ner").model.predict([doc])[0])


def enumerate_doc(nlp, doc: Doc, temperature: float = 1.0) -> list[tuple[int, Enumerated]]:
    """(start token, enumeration) of each sentence of ``doc`` (the doc if it has none)."""
    ner = nlp.get_pipe("crf_ner")
    emissions = emissions_of(nlp, doc)
    sents = list(doc.sents) if doc.has_annotation("SENT_START") else [doc[:]]
    return [(s.start, Enumerated(ner, emissions[s.start : s.end], temperature)) for s in sents]


def spans_of(group) -> list[tuple[int, int, str]]:
    return [(span.start, span.end, span.label_) for span in group]


def settings_of(ner, **values):
    """Set attributes of the component for a ``with`` block; restored afterwards."""

    class _Settings:
        def __enter__(self):
            self.saved = {name: getattr(ner, name) for name in values}
            for name, value in values.items():
                setattr(ner, name, value)

        def __exit__(self, *exc):
            for name, value in self.saved.items():
                setattr(ner, name, value)

    return _Settings()


def two_sentences(nlp) -> Doc:
    """A doc of two sentences of 4 and 3 tokens, with an entity in each."""
    words = ["Shaka", "Khan", "visited", "Berlin", "I", "like", "London"]
    return Doc(nlp.vocab, words=words, sent_starts=[True, False, False, False, True, False, False])


# ------------------------------------------------------------------ the component


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
    with settings_of(ner, entity_probs=True):
        docs = list(nlp.pipe([eg.reference.text for eg in examples]))
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


def test_entity_and_path_probabilities_equal_brute_force(overfit):
    """On docs short enough to enumerate: every entity's probability is the mass of the tag
    paths it is an entity of, the path probability that of the best path."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    texts = ["Shaka Khan visited Berlin", "I like London.", "Zorblat quixed vorp."]
    with settings_of(ner, entity_probs=True):
        docs = list(nlp.pipe(texts))
    n_entities = 0
    for doc in docs:
        ((_, enum),) = enumerate_doc(nlp, nlp.make_doc(doc.text))
        assert spans_of(doc.ents) == enum.entities(0)
        assert doc._.crf_path_prob == pytest.approx(enum.path_prob(0), abs=1e-5)
        for ent in doc.ents:
            assert ent._.crf_prob == pytest.approx(
                enum.spans[ent.start, ent.end, ent.label_], abs=1e-5
            )
            n_entities += 1
    assert n_entities >= 3


def test_entity_probabilities_match_engine(overfit):
    """The component's numbers are the engine's exact span posteriors for its emissions."""
    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    text = "Angela Merkel visited London and Paris."
    with settings_of(ner, entity_probs=True):
        doc = nlp(text)
    expected = engine_entity_probs(nlp, doc)
    assert doc.spans["crf_ner"].attrs["scores"] == pytest.approx(expected, abs=1e-5)


def engine_entity_probs(nlp, doc, temperature=1.0):
    """The engine's probabilities of ``doc.ents`` for the component's emissions of its text,
    with emissions and CRF params divided by ``temperature``."""
    ner = nlp.get_pipe("crf_ner")
    emissions = torch.tensor(emissions_of(nlp, nlp.make_doc(doc.text))).unsqueeze(0)
    mask = torch.ones(emissions.shape[:2], dtype=torch.bool)
    crf = ner.model.get_ref("crf")
    params = tuple(
        torch.tensor(numpy.asarray(crf.get_param(name))) / temperature
        for name in ("transitions", "start", "end")
    )
    entities = [(0, e.start, e.end, e.label_) for e in doc.ents]
    return entity_probabilities(
        emissions / temperature, mask, params, ner._get_constraints(), ner.scheme,
        ner.tag_names, entities,
    ).tolist()  # fmt: skip


def test_candidates_include_spans_off_the_best_path(overfit):
    """The candidates are exactly the spans whose enumerated probability reaches the
    threshold, best first, and they include spans that are not on the best path."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    text, threshold = "Shaka Khan visited Berlin", 0.001
    with settings_of(ner, candidate_threshold=threshold):
        doc = nlp(text)
    assert "crf_ner" not in doc.spans  # entity_probs stayed off
    group = doc.spans["crf_ner_candidates"]
    scores = group.attrs["scores"]
    assert len(group) == len(scores) and scores == sorted(scores, reverse=True)
    ((_, enum),) = enumerate_doc(nlp, nlp.make_doc(text))
    found = dict(zip(spans_of(group), scores, strict=True))
    assert set(found) == {span for span, p in enum.spans.items() if p >= threshold}
    for span, score in found.items():
        assert score == pytest.approx(enum.spans[span], abs=1e-5), span
    off_path = set(found) - set(spans_of(doc.ents))
    assert off_path, "an overfit model still gives some other spans >= 0.001"
    assert set(spans_of(doc.ents)) <= set(found)


def test_max_candidate_length(overfit):
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    text, threshold = "Shaka Khan visited Berlin", 0.001
    with settings_of(ner, candidate_threshold=threshold, max_candidate_length=1):
        doc = nlp(text)
    ((_, enum),) = enumerate_doc(nlp, nlp.make_doc(text))
    expected = {s for s, p in enum.spans.items() if p >= threshold and s[1] - s[0] == 1}
    found = set(spans_of(doc.spans["crf_ner_candidates"]))
    assert found == expected
    assert (0, 2, "PERSON") not in found and (0, 2, "PERSON") in set(spans_of(doc.ents))


def test_entity_probs_and_candidates_together_with_a_custom_spans_key(overfit):
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    text, threshold = "Shaka Khan visited Berlin", 0.01
    with settings_of(ner, entity_probs=True, candidate_threshold=threshold, spans_key="mine"):
        doc = nlp(text)
    assert sorted(doc.spans) == ["mine", "mine_candidates"]
    ((_, enum),) = enumerate_doc(nlp, nlp.make_doc(text))
    entities = spans_of(doc.spans["mine"])
    assert entities == spans_of(doc.ents) == enum.entities(0) and len(entities) == 2
    group = doc.spans["mine_candidates"]
    candidates = dict(zip(spans_of(group), group.attrs["scores"], strict=True))
    assert set(candidates) == {span for span, p in enum.spans.items() if p >= threshold}
    for ent, score in zip(doc.ents, doc.spans["mine"].attrs["scores"], strict=True):
        key = (ent.start, ent.end, ent.label_)
        assert ent._.crf_prob == score == pytest.approx(enum.spans[key], abs=1e-5)
        assert candidates[key] == pytest.approx(score, abs=1e-9)
    assert doc._.crf_path_prob == pytest.approx(enum.path_prob(0), abs=1e-5)


# ------------------------------------------------------------------ docs with sentence boundaries


def test_probabilities_with_sentence_boundaries(overfit):
    """Each sentence is a CRF sequence of its own: entity probabilities are those within
    their sentence (at doc offsets), the doc's path probability is the product of the
    sentences' best-path probabilities."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    doc = two_sentences(nlp)
    sentences = enumerate_doc(nlp, doc)
    assert [start for start, _ in sentences] == [0, 4]
    with settings_of(ner, entity_probs=True):
        ner(doc)
    expected_ents = [
        (start + s, start + e, lab) for start, enum in sentences for s, e, lab in enum.entities(0)
    ]
    assert spans_of(doc.ents) == expected_ents
    assert any(start >= 4 for start, _, _ in expected_ents)  # an entity in the second one
    for ent in doc.ents:
        start, enum = sentences[0] if ent.start < 4 else sentences[1]
        expected = enum.spans[ent.start - start, ent.end - start, ent.label_]
        assert ent._.crf_prob == pytest.approx(expected, abs=1e-5)
    product = math.prod(enum.path_prob(0) for _, enum in sentences)
    assert doc._.crf_path_prob == pytest.approx(product, rel=1e-5)
    assert doc._.crf_path_prob < min(enum.path_prob(0) for _, enum in sentences)


def test_candidates_with_sentence_boundaries(overfit):
    """Candidates lie within one sentence, at doc offsets, with in-sentence probabilities."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    doc = two_sentences(nlp)
    threshold = 0.001
    with settings_of(ner, candidate_threshold=threshold):
        ner(doc)
    group = doc.spans["crf_ner_candidates"]
    found = dict(zip(spans_of(group), group.attrs["scores"], strict=True))
    expected = {
        (start + s, start + e, label): p
        for start, enum in enumerate_doc(nlp, doc)
        for (s, e, label), p in enum.spans.items()
        if p >= threshold
    }
    assert set(found) == set(expected)
    assert any(s >= 4 for s, _, _ in found) and not any(s < 4 < e for s, e, _ in found)
    for span, score in found.items():
        assert score == pytest.approx(expected[span], abs=1e-5)


def test_nbest_ignores_sentence_boundaries(overfit):
    """n-best analyses treat a doc as one CRF sequence (so that its analyses' probabilities
    are comparable), with or without sentence boundaries: the k most probable paths of the
    whole doc, by enumeration."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    words = ["Shaka", "Khan", "in", "Berlin", "."]
    doc = Doc(nlp.vocab, words=words, sent_starts=[True, False, True, False, False])
    (found,) = ner.nbest([doc], k=3)
    (plain,) = ner.nbest([Doc(nlp.vocab, words=words)], k=3)
    enum = Enumerated(ner, emissions_of(nlp, doc))
    assert len(found) == 3
    for rank, (ents, prob) in enumerate(found):
        assert spans_of(ents) == enum.entities(rank)
        assert prob == pytest.approx(enum.path_prob(rank), abs=1e-5)
    assert [(spans_of(e), p) for e, p in found] == [(spans_of(e), p) for e, p in plain]


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


def test_rank_documents_orders_by_uncertainty(overfit):
    """Uncertainty: 1 - P(best path) (by path) or 1 - the least probable entity (by entity),
    against enumeration on short docs."""

    from spacy_crf_ner.rank import rank_documents

    nlp, _ = overfit
    texts = [
        "Who is Shaka Khan?",
        "I like London.",
        "Zorblat quixed vorp.",
        "Shaka Khan visited Berlin",
    ]
    enums = [enumerate_doc(nlp, nlp.make_doc(text))[0][1] for text in texts]
    by_path = [1 - enum.path_prob(0) for enum in enums]
    by_entity = []
    for enum in enums:
        probs = [enum.spans[span] for span in enum.entities(0)]
        by_entity.append(1 - min(probs) if probs else 0.0)
    assert len(set(numpy.round(by_path, 6))) == len(texts)  # a strict order to check
    for by, expected in [("path", by_path), ("entity", by_entity)]:
        records = rank_documents(nlp, texts, by=by)
        order = sorted(range(len(texts)), key=lambda i: (-round(expected[i], 6), i))
        assert [r["index"] for r in records] == order, by
        for record in records:
            assert record["uncertainty"] == pytest.approx(expected[record["index"]], abs=1e-5)
            enum = enums[record["index"]]
            assert record["path_prob"] == pytest.approx(enum.path_prob(0), abs=1e-5)
            for ent in record["entities"]:
                doc = nlp.make_doc(record["text"])
                span = doc.char_span(ent["start"], ent["end"])
                assert ent["prob"] == pytest.approx(
                    enum.spans[span.start, span.end, ent["label"]], abs=2e-6
                )
    assert nlp.get_pipe("crf_ner").entity_probs is False  # restored


@pytest.mark.slow
def test_rank_cli_on_a_saved_pipeline(overfit, tmp_path):
    """`python -m spacy_crf_ner rank` in a subprocess: the texts, most uncertain first."""
    import json
    import subprocess
    import sys

    from spacy_crf_ner.rank import rank_documents

    nlp, _ = overfit
    texts = ["Who is Shaka Khan?", "I like London.", "Zorblat quixed vorp."]
    nlp.to_disk(tmp_path / "model")
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
    out = tmp_path / "queue.jsonl"
    subprocess.run(
        [sys.executable, "-m", "spacy_crf_ner", "rank", str(tmp_path / "model"),
         str(tmp_path / "in.txt"), "--output", str(out)],
        check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.read_text(encoding="utf8").splitlines()]
    assert lines == rank_documents(nlp, texts)
    assert lines[0]["uncertainty"] > lines[-1]["uncertainty"]


# ------------------------------------------------------------------ temperature


def test_temperature_scales_all_scores(overfit):
    """At temperature T the probabilities are the engine's for emissions and CRF params / T;
    the entities do not change, and the over-confident path probability softens."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    text = "Angela Merkel visited London and Paris."
    with settings_of(ner, entity_probs=True):
        cold = nlp(text)
        with settings_of(ner, temperature=3.0):
            warm = nlp(text)
    assert [(e.start, e.end, e.label_) for e in warm.ents] == [
        (e.start, e.end, e.label_) for e in cold.ents
    ]
    expected = engine_entity_probs(nlp, warm, temperature=3.0)
    assert warm.spans["crf_ner"].attrs["scores"] == pytest.approx(expected, abs=1e-5)
    assert warm._.crf_path_prob < cold._.crf_path_prob
    # n-best: same ranking, softer probabilities.
    with settings_of(ner, temperature=3.0):
        (warm_best,) = ner.nbest([nlp.make_doc(text)], k=3)
    (cold_best,) = ner.nbest([nlp.make_doc(text)], k=3)
    assert [[(e.start, e.end, e.label_) for e in ents] for ents, _ in warm_best] == [
        [(e.start, e.end, e.label_) for e in ents] for ents, _ in cold_best
    ]
    assert warm_best[0][1] < cold_best[0][1] and sum(p for _, p in warm_best) <= 1.0 + 1e-9
    assert warm_best[0][1] == pytest.approx(warm._.crf_path_prob, rel=1e-5)


def test_temperature_against_brute_force(overfit):
    """At T = 2.5 on a short doc: the CRF whose every score is divided by T, enumerated."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    text = "Shaka Khan visited Berlin"
    with settings_of(ner, entity_probs=True, temperature=2.5):
        doc = nlp(text)
        (best,) = ner.nbest([nlp.make_doc(text)], k=2)
    ((_, enum),) = enumerate_doc(nlp, nlp.make_doc(text), temperature=2.5)
    assert spans_of(doc.ents) == enum.entities(0)
    for ent in doc.ents:
        assert ent._.crf_prob == pytest.approx(enum.spans[ent.start, ent.end, ent.label_], abs=1e-5)
    assert doc._.crf_path_prob == pytest.approx(enum.path_prob(0), abs=1e-5)
    assert [p for _, p in best] == pytest.approx([enum.path_prob(0), enum.path_prob(1)], abs=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_temperature(bad):
    from spacy.lang.en import English

    with pytest.raises(ValueError, match="temperature"):
        English().add_pipe("crf_ner", config={"temperature": bad})


def test_log_loss_and_ece_hand_computed():
    from spacy_crf_ner.calibrate import binary_log_loss, expected_calibration_error

    probs = numpy.array([0.9, 0.6, 0.97, 0.3])
    correct = numpy.array([1.0, 0.0, 1.0, 1.0])
    # -(ln 0.9 + ln 0.4 + ln 0.97 + ln 0.3) / 4
    assert binary_log_loss(probs, correct) == pytest.approx(0.5640208, abs=1e-5)
    # Bins [0, .5): 0.3 vs 1; [.6, .7): 0.6 vs 0; [.9, .95): 0.9 vs 1; [.95, .99): 0.97 vs 1.
    # (0.7 + 0.6 + 0.1 + 0.03) / 4
    assert expected_calibration_error(probs, correct) == pytest.approx(0.3575, abs=1e-9)
    # Two in one bin: |mean prob - accuracy| = |0.92 - 0.5|, weighted 2/3; 0.2 vs 0: 1/3.
    assert expected_calibration_error(
        numpy.array([0.91, 0.93, 0.2]), numpy.array([1.0, 0.0, 0.0])
    ) == pytest.approx(2 / 3 * 0.42 + 1 / 3 * 0.2, abs=1e-9)
    # A certain right answer costs nothing; a certain wrong one is clipped, not infinite.
    assert binary_log_loss(numpy.array([1.0]), numpy.array([1.0])) == pytest.approx(0, abs=1e-9)
    assert binary_log_loss(numpy.array([1.0]), numpy.array([0.0])) == pytest.approx(
        -math.log(1e-12), rel=1e-6
    )
    assert expected_calibration_error(numpy.array([]), numpy.array([])) == 0.0


def test_fit_temperature_softens_an_over_confident_model(overfit, over_confident_gold):
    """Half the dev entities are right, all predicted with near-certainty: the fitted
    temperature is > 1, and its log-loss, recomputed here from the pipeline's own
    probabilities at that temperature, is lower than at T = 1 and at its grid neighbours."""
    from spacy_crf_ner.calibrate import DEFAULT_TEMPERATURES, fit_temperature

    nlp, examples = overfit
    ner = nlp.get_pipe("crf_ner")
    gold = over_confident_gold
    result = fit_temperature(nlp, gold)
    assert ner.temperature == 1.0 and ner.entity_probs is False  # restored
    assert result.accuracy == pytest.approx(0.5)
    assert [s.temperature for s in result.scores] == list(DEFAULT_TEMPERATURES)

    def pipeline_log_loss(temperature: float) -> tuple[float, int]:
        with settings_of(ner, entity_probs=True, temperature=temperature):
            docs = list(nlp.pipe([doc.text for doc in gold]))
        losses = []
        for doc, ref in zip(docs, gold, strict=True):
            truth = {(e.start, e.end, e.label_) for e in ref.ents}
            for ent in doc.ents:
                p = ent._.crf_prob
                losses.append(-math.log(p if (ent.start, ent.end, ent.label_) in truth else 1 - p))
        return sum(losses) / len(losses), len(losses)

    best = result.best.temperature
    i = DEFAULT_TEMPERATURES.index(best)
    assert 1.0 < best < DEFAULT_TEMPERATURES[-1]  # an interior minimum of the grid
    at_best, n_entities = pipeline_log_loss(best)
    assert n_entities == result.n_entities == 14
    assert result.best.log_loss == pytest.approx(at_best, rel=1e-5)
    at_1 = next(s for s in result.scores if s.temperature == 1.0)
    assert at_1.log_loss == pytest.approx(pipeline_log_loss(1.0)[0], rel=1e-5)
    for neighbour in (DEFAULT_TEMPERATURES[i - 1], DEFAULT_TEMPERATURES[i + 1], 1.0):
        assert at_best < pipeline_log_loss(neighbour)[0]
    # Half right, half wrong, probabilities near 1: ECE near 0.5 at T = 1, less at the best.
    assert 0.4 < at_1.ece <= 0.5 and result.best.ece < at_1.ece
