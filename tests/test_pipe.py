"""Tests of the ``crf_ner`` component, in the style of spaCy's test_spancat.py."""

import pickle
import subprocess
import sys
from io import BytesIO

import numpy
import pytest
import spacy
import srsly
import torch
from numpy.testing import assert_array_equal
from spacy.lang.en import English
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed, load_model_from_config, make_tempdir
from thinc.api import Config, get_current_ops

from spacy_crf_ner.crf import viterbi
from spacy_crf_ner.layers import deserialize_state_dict, serialize_state_dict
from spacy_crf_ner.pipe import CRFEntityRecognizer

OPS = get_current_ops()

LISTENER_CONFIG = """
[nlp]
lang = "en"
pipeline = ["tok2vec", "crf_ner"]

[components]

[components.tok2vec]
factory = "tok2vec"

[components.tok2vec.model]
@architectures = "spacy.Tok2Vec.v2"

[components.tok2vec.model.embed]
@architectures = "spacy.MultiHashEmbed.v2"
width = 32
rows = [500, 500, 500, 500]
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
include_static_vectors = false

[components.tok2vec.model.encode]
@architectures = "spacy.MaxoutWindowEncoder.v2"
width = 32
depth = 2
window_size = 1
maxout_pieces = 2

[components.crf_ner]
factory = "crf_ner"

[components.crf_ner.model]
@architectures = "spacy_crf_ner.CRFTagger.v1"

[components.crf_ner.model.tok2vec]
@architectures = "spacy.Tok2VecListener.v1"
width = 32
upstream = "tok2vec"
"""


@pytest.fixture
def make_examples(en_train_data):
    """Factory: gold examples of ``data`` (default: the shared English training data)."""

    def make(nlp: Language, data=None) -> list[Example]:
        data = en_train_data if data is None else data
        return [Example.from_dict(nlp.make_doc(t), {"entities": ents}) for t, ents in data]

    return make


@pytest.fixture
def make_nlp(small_model):
    """Factory: a blank English pipeline with a crf_ner of the small model; keyword
    arguments are settings of the component."""

    def make(**config) -> tuple[Language, CRFEntityRecognizer]:
        nlp = English()
        config.setdefault("model", small_model)
        ner = nlp.add_pipe("crf_ner", config=config)
        return nlp, ner

    return make


def train(nlp: Language, examples: list[Example], n_iter: int) -> list[float]:
    optimizer = nlp.initialize(get_examples=lambda: examples)
    history = []
    for _ in range(n_iter):
        losses: dict[str, float] = {}
        nlp.update(examples, sgd=optimizer, losses=losses)
        history.append(losses["crf_ner"])
    return history


def ents(doc: Doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


@pytest.fixture(scope="module")
def trained(en_train_data) -> tuple[Language, list[Example]]:
    """The default model (factory defaults), overfitted on the English training data."""
    fix_random_seed(0)
    nlp = English()
    nlp.add_pipe("crf_ner")
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in en_train_data]
    train(nlp, examples, 60)
    return nlp, examples


# ------------------------------------------------------------------ labels


def test_no_label_error(make_nlp, make_examples):
    nlp, _ = make_nlp()
    with pytest.raises(ValueError, match="No entity labels for component 'crf_ner'"):
        nlp.initialize()
    nlp, _ = make_nlp()  # an empty corpus (e.g. spacy train given a .iob file): said so
    with pytest.raises(ValueError, match="No entity labels for component 'crf_ner'") as err:
        nlp.initialize(get_examples=lambda: iter([]))
    assert "no training examples" in str(err.value) and ".spacy" in str(err.value)
    nlp, _ = make_nlp()
    examples = make_examples(nlp, [("The weather was nice.", [])])
    with pytest.raises(ValueError, match="No entity labels") as err:
        nlp.initialize(get_examples=lambda: examples)
    assert "doc.ents" in str(err.value) and "no training examples" not in str(err.value)


def test_implicit_labels(make_nlp, make_examples):
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    assert ner.labels == ()
    nlp.initialize(get_examples=lambda: examples)
    assert ner.labels == ("LOC", "ORG", "PERSON")
    assert ner.label_data == ["LOC", "ORG", "PERSON"]
    assert ner.tag_names[0] == "O" and len(ner.tag_names) == 1 + 4 * 3
    assert ner.model.get_ref("output_layer").get_dim("nO") == len(ner.tag_names)
    assert ner.model.get_ref("crf").get_param("transitions").shape == (13, 13)


def test_explicit_labels(make_nlp, make_examples):
    nlp, ner = make_nlp(tag_scheme="BIO")
    examples = make_examples(nlp)
    ner.initialize(lambda: examples, nlp=nlp, labels=["PERSON", "LOC", "ORG", "X"])
    assert ner.labels == ("LOC", "ORG", "PERSON", "X")
    assert ner.tag_names[:3] == ("O", "B-LOC", "I-LOC")
    assert ner.tag_names[-2:] == ("B-X", "I-X")
    # A trained component grows (tests/test_finetune.py); a bad label is still refused.
    with pytest.raises(ValueError, match="Can't add label to component 'crf_ner'.*whitespace"):
        ner.add_label("NEW LABEL")


def test_labels_added_before_initialize(make_nlp, make_examples):
    nlp, ner = make_nlp()
    ner.add_label("X")
    nlp.initialize()
    assert ner.labels == ("X",)
    nlp, ner = make_nlp()
    ner.add_label("X")
    nlp.initialize(get_examples=lambda: make_examples(nlp))
    assert ner.labels == ("LOC", "ORG", "PERSON", "X")


def test_pickle(trained):
    nlp, examples = trained
    nlp2 = pickle.loads(pickle.dumps(nlp))
    texts = [eg.reference.text for eg in examples]
    assert [ents(doc) for doc in nlp2.pipe(texts)] == [ents(doc) for doc in nlp.pipe(texts)]


def test_labels_from_initialize_config(make_nlp, make_examples):
    """As ``spacy init labels`` + [initialize.components.crf_ner.labels] provide them."""
    nlp, ner = make_nlp()
    nlp.config["initialize"]["components"]["crf_ner"] = {"labels": ["Y", "X"]}
    nlp.initialize(get_examples=lambda: make_examples(nlp, [("No entities here.", [])]))
    assert ner.labels == ("X", "Y")


def test_unknown_label_in_gold(make_nlp, make_examples):
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    ner.initialize(lambda: examples, nlp=nlp, labels=["PERSON"])
    with pytest.raises(ValueError, match="Unknown entity label 'LOC'.*I like London"):
        nlp.update(examples)


def test_overlapping_gold_spans(make_nlp):
    """Overlapping gold entities can't come from doc.ents, but from hand-made BILUO tags."""
    nlp, ner = make_nlp()
    ner.add_label("PER")
    ner.add_label("ORG")
    doc = nlp.make_doc("Bank of Ann Smith")
    with pytest.raises(ValueError, match="doc starting 'Bank of Ann Smith'.*overlap"):
        ner._gold_tag_ids(doc, ["B-ORG", "I-ORG", "U-PER", "L-ORG"])
    # An entity cut by a missing position is fine: the gap may hold its end.
    ids = ner._gold_tag_ids(doc, [None, "O", "B-PER", None])
    assert list(ids[[0, 3]]) == [-1, -1]


def test_unknown_scheme_error():
    nlp = English()
    with pytest.raises(ValueError, match="tag_scheme for component 'my_ner'.*'XYZ'.*BILUO"):
        nlp.add_pipe("crf_ner", name="my_ner", config={"tag_scheme": "XYZ"})


# ------------------------------------------------------------------ training and prediction


def test_overfit_save_load(trained, make_examples):
    nlp, examples = trained
    texts = [eg.reference.text for eg in examples]
    predicted = [ents(doc) for doc in nlp.pipe(texts)]
    assert predicted == [ents(eg.reference) for eg in examples]
    scores = nlp.evaluate(examples)
    assert (scores["ents_p"], scores["ents_r"], scores["ents_f"]) == (1.0, 1.0, 1.0)

    with make_tempdir() as tmp_dir:
        nlp.to_disk(tmp_dir)
        nlp2 = spacy.load(tmp_dir)
    assert nlp2.get_pipe("crf_ner").labels == nlp.get_pipe("crf_ner").labels
    assert [ents(doc) for doc in nlp2.pipe(texts)] == predicted
    scores2 = nlp2.evaluate(make_examples(nlp2))
    assert (scores2["ents_p"], scores2["ents_r"], scores2["ents_f"]) == (1.0, 1.0, 1.0)
    docs = [nlp.make_doc(text) for text in texts]
    tags1 = nlp.get_pipe("crf_ner").predict(docs)
    tags2 = nlp2.get_pipe("crf_ner").predict(docs)
    for a, b in zip(tags1, tags2, strict=True):
        assert_array_equal(a, b)
    emissions1 = nlp.get_pipe("crf_ner").model.predict(docs)
    emissions2 = nlp2.get_pipe("crf_ner").model.predict(docs)
    for a, b in zip(emissions1, emissions2, strict=True):
        assert_array_equal(OPS.to_numpy(a), OPS.to_numpy(b))

    nlp3 = English()
    nlp3.add_pipe("crf_ner")
    nlp3.from_bytes(nlp.to_bytes())
    assert [ents(doc) for doc in nlp3.pipe(texts)] == predicted
    assert nlp3.get_pipe("crf_ner").to_bytes() == nlp.get_pipe("crf_ner").to_bytes()


def test_predict_does_not_mutate_and_is_batch_invariant(trained):
    nlp, examples = trained
    ner = nlp.get_pipe("crf_ner")
    docs = [nlp.make_doc(eg.reference.text) for eg in examples]
    batch = ner.predict(docs)
    assert all(not doc.ents for doc in docs)
    for doc, ids in zip(docs, batch, strict=True):
        assert_array_equal(ner.predict([doc])[0], ids)


def test_loss_decreases_and_crf_params_are_trained(make_nlp, make_examples):
    fix_random_seed(0)
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: examples)
    crf = ner.model.get_ref("crf")
    before = {name: OPS.to_numpy(crf.get_param(name)).copy() for name in crf.param_names}
    assert not before["transitions"].any()
    history = []
    for _ in range(15):
        losses: dict[str, float] = {}
        nlp.update(examples, sgd=optimizer, losses=losses)
        history.append(losses["crf_ner"])
    for name in ("transitions", "start", "end"):
        after = OPS.to_numpy(crf.get_param(name))
        assert numpy.abs(after - before[name]).max() > 1e-3, name
    assert history[-1] < history[0] / 2


def test_get_loss_agrees_with_update_and_is_pure(make_nlp, make_examples):
    """get_loss gives update's loss (no dropout) and its gradient w.r.t. the scores, and
    changes nothing: not the scores, not the weights, no gradient accumulated."""
    fix_random_seed(0)
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    scores = ner.model.predict([eg.predicted for eg in examples])
    saved_scores = [s.copy() for s in scores]
    weights = {(node.id, p): node.get_param(p).copy() for node, p in _params(ner.model)}
    loss, d_scores = ner.get_loss(examples, scores)
    again, d_again = ner.get_loss(examples, scores)
    assert loss > 1.0 and again == loss
    for d, d2, s, saved in zip(d_scores, d_again, scores, saved_scores, strict=True):
        assert d.shape == s.shape and d.any()
        assert_array_equal(d, d2)
        assert_array_equal(s, saved)
    for node, p in _params(ner.model):
        assert_array_equal(node.get_param(p), weights[node.id, p])
        assert not (node.has_grad(p) and node.get_grad(p).any()), (node.name, p)
    # The gradient is the loss's: central differences on a few scores.
    for doc_i, token, tag in [(0, 2, 1), (3, 0, 2), (3, 4, 0)]:
        bumped = [s.copy() for s in scores]
        bumped[doc_i][token, tag] += 0.05
        up = ner.get_loss(examples, bumped)[0]
        bumped[doc_i][token, tag] -= 0.1
        down = ner.get_loss(examples, bumped)[0]
        assert (up - down) / 0.1 == pytest.approx(d_scores[doc_i][token, tag], abs=2e-3)
    # update's loss, without dropout, is the same number.
    losses = ner.update(examples, drop=0.0)
    assert losses["crf_ner"] == pytest.approx(loss, rel=1e-5)


def test_bio_scheme_overfits(make_nlp, make_examples):
    fix_random_seed(0)
    nlp, ner = make_nlp(tag_scheme="bio")
    assert ner.cfg["tag_scheme"] == "BIO"
    examples = make_examples(nlp)
    train(nlp, examples, 50)
    assert nlp.evaluate(examples)["ents_f"] == 1.0
    with make_tempdir() as tmp_dir:
        nlp.to_disk(tmp_dir)
        nlp2 = spacy.load(tmp_dir)
    assert nlp2.get_pipe("crf_ner").tag_names == ner.tag_names
    assert nlp2.evaluate(make_examples(nlp2))["ents_f"] == 1.0


def test_shared_tok2vec_listener(make_examples):
    fix_random_seed(0)
    nlp = load_model_from_config(Config().from_str(LISTENER_CONFIG), auto_fill=True)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(get_examples=lambda: examples)
    tok2vec = nlp.get_pipe("tok2vec").model
    before = [OPS.to_numpy(node.get_param(p)).copy() for node, p in _params(tok2vec)]
    for _ in range(40):
        nlp.update(examples, sgd=optimizer)
    after = [OPS.to_numpy(node.get_param(p)) for node, p in _params(tok2vec)]
    changed = [not numpy.array_equal(a, b) for a, b in zip(before, after, strict=True)]
    assert all(changed), "the CRF's gradient must reach every layer of the shared tok2vec"
    assert nlp.evaluate(examples)["ents_f"] == 1.0
    with make_tempdir() as tmp_dir:
        nlp.to_disk(tmp_dir)
        nlp2 = spacy.load(tmp_dir)
    assert nlp2.evaluate(make_examples(nlp2))["ents_f"] == 1.0


def _params(model):
    return [(node, name) for node in model.walk() for name in node.param_names]


# ------------------------------------------------------------------ missing annotation


def test_partial_labels_train(make_nlp):
    """Missing tags ("-") are marginalised: a partly annotated doc's loss is -log of the
    probability of all paths that agree with its annotated tags, by enumeration, and the
    gradient at a missing position is P(tag) - P(tag | the annotated tags), not a one-hot."""
    fix_random_seed(0)
    nlp, ner = make_nlp()
    words_data = [
        ("Who is Shaka Khan ?", ["-", "O", "B-PERSON", "L-PERSON", "-"]),
        ("I like London and Berlin .", ["O", "-", "U-LOC", "O", "U-LOC", "O"]),
        ("Angela Merkel visited Paris", ["B-PERSON", "L-PERSON", "-", "-"]),
    ]
    examples = [
        Example.from_dict(Doc(nlp.vocab, words=text.split()), {"entities": tags})
        for text, tags in words_data
    ]
    assert examples[0].get_aligned_ner()[0] is None
    optimizer = nlp.initialize(get_examples=lambda: examples)
    history = []
    for _ in range(10):
        losses: dict[str, float] = {}
        nlp.update(examples, sgd=optimizer, losses=losses)
        history.append(losses["crf_ner"])
    assert all(numpy.isfinite(history)) and history[-1] < history[0]
    # Brute force on the first doc (9 tags, 5 tokens).
    eg = examples[0]
    scores = ner.model.predict([eg.predicted])
    loss, d_scores = ner.get_loss([eg], scores)
    observed = [None if tag == "-" else tag for tag in words_data[0][1]]
    log_z, log_agree, marginals = enumerate_crf(ner, scores[0], observed)
    assert loss == pytest.approx(log_z - log_agree, rel=1e-5)
    _, _, given = enumerate_crf_given(ner, scores[0], observed)
    numpy.testing.assert_allclose(d_scores[0], marginals - given, atol=1e-5)
    assert numpy.abs(d_scores[0][0]).max() > 1e-4  # missing, but not ignored


def enumerate_crf_given(ner, emissions, observed):
    """The tag marginals of the CRF restricted to the paths that agree with ``observed``."""
    masked = numpy.array(emissions, dtype="float64")
    for t, tag in enumerate(observed):
        if tag is not None:
            keep = masked[t, ner.tag_names.index(tag)]
            masked[t] = -numpy.inf
            masked[t, ner.tag_names.index(tag)] = keep
    with numpy.errstate(invalid="ignore"):
        return enumerate_crf(ner, masked)


def test_all_missing_doc_is_skipped(make_nlp, make_examples):
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    nlp.initialize(get_examples=lambda: examples)
    missing = Example(
        nlp.make_doc("Nothing is annotated here"), nlp.make_doc("Nothing is annotated here")
    )
    assert all(tag is None for tag in missing.get_aligned_ner())
    scores = ner.model.predict([missing.predicted])
    loss, d_scores = ner.get_loss([missing], scores)
    assert loss == 0.0 and not OPS.to_numpy(d_scores[0]).any()
    losses = ner.update([missing])
    assert losses["crf_ner"] == 0.0
    # In a mixed batch, the unannotated doc gets no gradient and adds nothing to the loss.
    batch = [missing, examples[0]]
    scores = ner.model.predict([eg.predicted for eg in batch])
    loss, d_scores = ner.get_loss(batch, scores)
    loss_alone, _ = ner.get_loss(batch[1:], scores[1:])
    assert not OPS.to_numpy(d_scores[0]).any() and OPS.to_numpy(d_scores[1]).any()
    assert loss == pytest.approx(loss_alone)


# ------------------------------------------------------------------ edge cases


def test_empty_docs(trained, make_examples):
    nlp, examples = trained
    ner = nlp.get_pipe("crf_ner")
    assert nlp("").ents == ()
    docs = list(nlp.pipe(["", "Who is Shaka Khan?", ""]))
    assert [ents(doc) for doc in docs] == [[], [(2, 4, "PERSON")], []]
    empty = make_examples(nlp, [("", []), ("", [])])
    assert ner.update(empty)["crf_ner"] == 0.0
    mixed = empty + examples[:1]
    losses = ner.update(mixed)
    assert numpy.isfinite(losses["crf_ner"])
    scores = nlp.evaluate(mixed)
    assert scores["ents_f"] == 1.0
    assert [list(ids) for ids in ner.predict([nlp.make_doc("")])] == [[]]


def test_sentence_boundaries_are_respected(trained):
    nlp, _ = trained
    ner = nlp.get_pipe("crf_ner")
    text = "Angela Merkel visited New York City last May."
    whole = nlp(text)
    assert (3, 6, "LOC") in ents(whole)
    doc = nlp.make_doc(text)
    doc[4].is_sent_start = True  # "New | York City ..."
    for i in range(1, len(doc)):
        if i != 4:
            doc[i].is_sent_start = False
    ner(doc)
    for ent in doc.ents:
        assert ent.sent.start <= ent.start and ent.end <= ent.sent.end
    # Each sentence is decoded as a CRF sequence of its own (the encoder sees the whole doc).
    emissions = torch.from_numpy(OPS.to_numpy(ner.model.predict([doc])[0]))
    crf = ner.model.get_ref("crf")
    params = [
        torch.from_numpy(OPS.to_numpy(crf.get_param(n))) for n in ("transitions", "start", "end")
    ]
    expected = []
    for start, end in ((0, 4), (4, len(doc))):
        path, _ = viterbi(emissions[None, start:end], None, *params, ner._get_constraints())
        expected.extend(path[0].tolist())
    assert ner.predict([doc])[0].tolist() == expected
    # respect_sentences = false decodes the doc as one sequence, across the boundary.
    ner.respect_sentences = False
    try:
        assert ents(ner(doc)) == ents(whole)
    finally:
        ner.respect_sentences = True


# Gold tags of each CRF sequence of the doc below, written by hand: IOB1's B-/I- depend on
# where a sequence starts (in one sequence "Berlin" would be B-LOC, after "Paris").
SENTENCE_GOLD = {
    "BILUO": [["U-LOC"], ["U-LOC", "O", "O"], ["O", "O", "B-LOC", "I-LOC", "L-LOC"]],
    "IOB1": [["I-LOC"], ["I-LOC", "O", "O"], ["O", "O", "I-LOC", "I-LOC", "I-LOC"]],
    "BIO": [["B-LOC"], ["B-LOC", "O", "O"], ["O", "O", "B-LOC", "I-LOC", "I-LOC"]],
}


@pytest.mark.parametrize("scheme", ["BILUO", "IOB1", "BIO"])
def test_training_with_sentence_boundaries(scheme, make_nlp):
    """Sentences are separate CRF sequences in training too, except where a gold entity
    crosses a boundary; gold tags are converted per sequence (IOB1 B-/I- depend on it).

    The loss is the sum of each sequence's negative log-likelihood of its hand-written gold
    tags, and the gradient each sequence's (marginals - gold), both by enumeration."""
    nlp, ner = make_nlp(tag_scheme=scheme)
    words = ["Paris", "Berlin", "are", "cities", "I", "saw", "New", "York", "City"]
    sent_starts = [True, True, False, False, True, False, False, True, False]
    doc = Doc(nlp.vocab, words=words, sent_starts=sent_starts)
    eg = Example.from_dict(
        doc, {"entities": ["U-LOC", "U-LOC", "O", "O", "O", "O", "B-LOC", "I-LOC", "L-LOC"]}
    )
    assert eg.predicted.has_annotation("SENT_START")
    ner.initialize(lambda: [eg], nlp=nlp)
    optimizer = ner.create_optimizer()
    for _ in range(3):  # non-zero transition scores
        ner.update([eg], sgd=optimizer)
    scores = ner.model.predict([eg.predicted])
    loss, d_scores = ner.get_loss([eg], scores)
    expected_loss, expected_grad = 0.0, numpy.zeros_like(scores[0])
    for (start, end), gold in zip([(0, 1), (1, 4), (4, 9)], SENTENCE_GOLD[scheme], strict=True):
        log_z, gold_score, marginals = enumerate_crf(ner, scores[0][start:end], gold)
        expected_loss += log_z - gold_score
        expected_grad[start:end] = marginals
        for t, tag in enumerate(gold):
            expected_grad[start + t, ner.tag_names.index(tag)] -= 1.0
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    numpy.testing.assert_allclose(d_scores[0], expected_grad, atol=1e-5)
    for _ in range(5):
        losses = ner.update([eg], sgd=optimizer)
    assert numpy.isfinite(losses["crf_ner"]) and losses["crf_ner"] < loss


def enumerate_crf(ner, emissions, observed=None, constrained=True):
    """By enumeration of every tag path of one CRF sequence that the scheme allows: the log
    partition, the log-sum of the paths that agree with ``observed`` (tag names, None where
    missing) and the tag marginals (n, K)."""
    crf = ner.model.get_ref("crf")
    trans, start, end = (
        numpy.asarray(crf.get_param(n), dtype="float64") for n in ("transitions", "start", "end")
    )
    emissions = numpy.asarray(emissions, dtype="float64")
    n, k = emissions.shape
    paths = numpy.indices((k,) * n).reshape(n, -1).T
    ok_trans, ok_start, ok_end = ner.scheme.allowed_transitions(ner.tag_names)
    if not constrained:
        ok_trans, ok_start, ok_end = (numpy.ones_like(a) for a in (ok_trans, ok_start, ok_end))
    valid = ok_start[paths[:, 0]] & ok_end[paths[:, -1]]
    score = start[paths[:, 0]] + end[paths[:, -1]] + emissions[numpy.arange(n), paths].sum(1)
    for t in range(1, n):
        valid &= ok_trans[paths[:, t - 1], paths[:, t]]
        score += trans[paths[:, t - 1], paths[:, t]]
    paths, score = paths[valid], score[valid]
    log_z = numpy.logaddexp.reduce(score)
    agree = numpy.ones(len(paths), dtype=bool)
    for t, tag in enumerate(observed or []):
        if tag is not None:
            agree &= paths[:, t] == ner.tag_names.index(tag)
    marginals = numpy.zeros((n, k))
    for t in range(n):
        numpy.add.at(marginals[t], paths[:, t], numpy.exp(score - log_z))
    return log_z, numpy.logaddexp.reduce(score[agree]), marginals


def test_training_unconstrained(make_nlp, make_examples):
    """constrained = false: the loss normalises over every tag sequence (by enumeration),
    and the model still learns the gold entities, as valid tag sequences."""
    fix_random_seed(0)
    nlp, ner = make_nlp(constrained=False)
    examples = make_examples(nlp)
    assert ner._get_constraints() is None
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    eg = examples[0]  # "Who is Shaka Khan?": 5 tokens, 13 tags
    scores = ner.model.predict([eg.predicted])
    loss, _ = ner.get_loss([eg], scores)
    gold = ["O", "O", "B-PERSON", "L-PERSON", "O"]
    log_z, gold_score, _ = enumerate_crf(ner, scores[0], gold, constrained=False)
    assert loss == pytest.approx(log_z - gold_score, rel=1e-5)
    log_z_constrained, _, _ = enumerate_crf(ner, scores[0], gold)
    assert log_z > log_z_constrained + 1e-3  # the invalid sequences have mass
    train(nlp, examples, 50)
    assert nlp.evaluate(examples)["ents_f"] == 1.0
    for doc in nlp.pipe(eg.reference.text for eg in examples):
        tags = [ner.tag_names[i] for i in ner.predict([doc])[0]]
        assert ner.scheme.validate(tags) == []


def test_recall_cost_charges_missed_entity_tokens_only(make_nlp, make_examples):
    """``recall_cost`` makes the loss the softmax margin against tagging gold entity tokens O:
    nothing changes for a doc without entities; with entities the loss is higher, the score
    of O at an entity token is pushed down harder and no other score's gradient moves as much
    (an entity tag's gradient changes only through the shared normaliser)."""
    fix_random_seed(0)
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    empty = make_examples(nlp, [("nothing to find here at all", [])])
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    outside = ner.tag_names.index("O")
    for batch in (empty, examples):
        scores = ner.model.predict([eg.predicted for eg in batch])
        ner.recall_cost = 0.0
        plain, d_plain = ner.get_loss(batch, scores)
        ner.recall_cost = 2.0
        margin, d_margin = ner.get_loss(batch, scores)
        if batch is empty:
            assert margin == pytest.approx(plain)
            continue
        assert margin > plain + 1.0
        biluo = examples[0].get_aligned_ner()
        inside = [i for i, tag in enumerate(biluo) if tag != "O"]
        assert inside
        for i in inside:
            assert d_margin[0][i, outside] > d_plain[0][i, outside] + 0.05
    with pytest.raises(ValueError, match="recall_cost of component 'crf_ner' must be"):
        make_nlp(recall_cost=-1.0)


def test_non_finite_loss_error(make_nlp, make_examples):
    """A CRF that gives the gold tag sequence no probability: an error that names the
    component and the doc and says what to do, not an infinite loss."""
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    nlp.initialize(get_examples=lambda: examples)
    crf = ner.model.get_ref("crf")
    transitions = crf.get_param("transitions").copy()
    names = ner.tag_names
    transitions[names.index("B-PERSON"), names.index("L-PERSON")] = -numpy.inf
    crf.set_param("transitions", transitions)
    message = (
        r"\[crf_ner\] Component 'crf_ner': the gold entities of the doc starting 'Who is "
        r"Shaka Khan\?' are not a valid BILUO tag sequence .* constrained = false"
    )
    with pytest.raises(ValueError, match=message):
        ner.update(examples)
    scores = ner.model.predict([eg.predicted for eg in examples])
    with pytest.raises(ValueError, match=message):
        ner.get_loss(examples, scores)
    # The docs whose gold path avoids that transition still train.
    assert numpy.isfinite(ner.update(examples[1:3])["crf_ner"])


def test_unconstrained_decoding_still_gives_entities(trained):
    nlp, examples = trained
    ner = nlp.get_pipe("crf_ner")
    ner.constrained = False
    try:
        assert [ents(nlp(eg.reference.text)) for eg in examples] == [
            ents(eg.reference) for eg in examples
        ]
    finally:
        ner.constrained = True


# ------------------------------------------------------------------ serialization


def test_damaged_saved_model_error(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path)
    model_file = tmp_path / "crf_ner" / "model"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"component 'crf_ner' from file '.*crf_ner[/\\]model'"):
        spacy.load(tmp_path)
    model_file.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="Could not load component 'crf_ner'"):
        spacy.load(tmp_path)
    (tmp_path / "crf_ner" / "cfg").write_text("{ broken json")
    with pytest.raises(ValueError, match=r"component 'crf_ner' from file '.*cfg'"):
        spacy.load(tmp_path)


def test_damaged_bytes_error(trained, make_nlp):
    nlp, _ = trained
    data = nlp.get_pipe("crf_ner").to_bytes()
    _, ner = make_nlp()
    with pytest.raises(ValueError, match="Could not load component 'crf_ner' from bytes"):
        ner.from_bytes(data[: len(data) // 2])


def test_mismatched_cfg_and_model_error(trained, tmp_path):
    nlp, _ = trained
    nlp.to_disk(tmp_path)
    cfg = srsly.read_json(tmp_path / "crf_ner" / "cfg")
    cfg["labels"] = cfg["labels"][:1]
    srsly.write_json(tmp_path / "crf_ner" / "cfg", cfg)
    with pytest.raises(ValueError, match="do not belong together"):
        spacy.load(tmp_path)


def test_lstm_weights_are_not_pickled():
    module = torch.nn.LSTM(4, 3, bidirectional=True)
    data = serialize_state_dict(module)
    assert isinstance(srsly.msgpack_loads(data), dict)  # msgpack'd arrays, no pickle
    other = torch.nn.LSTM(4, 3, bidirectional=True)
    deserialize_state_dict(other, data, torch.device("cpu"))
    states = (module.state_dict().items(), other.state_dict().items())
    for (k1, v1), (k2, v2) in zip(*states, strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    # A torch.save archive is read with weights_only=True: a pickled object is refused.
    buffer = BytesIO()
    torch.save({"weight": _Evil()}, buffer)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        deserialize_state_dict(other, buffer.getvalue(), torch.device("cpu"))
    assert not _Evil.called
    with pytest.raises(ValueError, match="do not fit"):
        deserialize_state_dict(torch.nn.LSTM(5, 3, bidirectional=True), data, torch.device("cpu"))


class _Evil:
    called = False

    def __reduce__(self):
        return (_Evil._trigger, ())

    @staticmethod
    def _trigger():  # pragma: no cover - must never run
        _Evil.called = True
        return 0


def test_registrations_do_not_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import spacy_crf_ner, spacy_crf_ner.registrations, spacy_crf_ner.pipe\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_diverged_scores_error(make_nlp, make_examples):
    """NaN weights (training diverged) are named as such, not blamed on the gold tags."""
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    nlp.initialize(get_examples=lambda: examples)
    output = ner.model.get_ref("output_layer")
    weights = output.get_param("W").copy()
    weights[0, 0] = numpy.nan
    output.set_param("W", weights)
    with pytest.raises(ValueError, match=r"scores are not finite .* training diverged"):
        ner.update(examples)
