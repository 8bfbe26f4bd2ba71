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

TRAIN_DATA = [
    ("Who is Shaka Khan?", [(7, 17, "PERSON")]),
    ("I like London and Berlin.", [(7, 13, "LOC"), (18, 24, "LOC")]),
    ("Apple bought a small startup in Paris.", [(0, 5, "ORG"), (32, 37, "LOC")]),
    ("Angela Merkel visited New York City last May.", [(0, 13, "PERSON"), (22, 35, "LOC")]),
    ("The weather was nice.", []),
]

# A small model, so that the tests that train their own run fast.
SMALL_MODEL = {
    "@architectures": "spacy_crf_ner.CRFTagger.v1",
    "tok2vec": {
        "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
        "width": 32,
        "embed_size": 500,
        "char_features": 8,
        "lstm_width": 32,
    },
}

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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small models run fastest on one thread, and two threads on two busy cores can be
    30x slower (OpenMP oversubscription); restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_examples(nlp: Language, data=TRAIN_DATA) -> list[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def make_nlp(**config) -> tuple[Language, CRFEntityRecognizer]:
    nlp = English()
    config.setdefault("model", SMALL_MODEL)
    ner = nlp.add_pipe("crf_ner", config=config)
    return nlp, ner


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
def trained() -> tuple[Language, list[Example]]:
    """The default model (factory defaults), overfitted on TRAIN_DATA."""
    fix_random_seed(0)
    nlp = English()
    nlp.add_pipe("crf_ner")
    examples = make_examples(nlp)
    train(nlp, examples, 60)
    return nlp, examples


# ------------------------------------------------------------------ labels


def test_no_label_error():
    nlp, _ = make_nlp()
    with pytest.raises(ValueError, match="No entity labels for component 'crf_ner'"):
        nlp.initialize()
    nlp, _ = make_nlp()
    examples = make_examples(nlp, [("The weather was nice.", [])])
    with pytest.raises(ValueError, match="No entity labels"):
        nlp.initialize(get_examples=lambda: examples)


def test_implicit_labels():
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    assert ner.labels == ()
    nlp.initialize(get_examples=lambda: examples)
    assert ner.labels == ("LOC", "ORG", "PERSON")
    assert ner.label_data == ["LOC", "ORG", "PERSON"]
    assert ner.tag_names[0] == "O" and len(ner.tag_names) == 1 + 4 * 3
    assert ner.model.get_ref("output_layer").get_dim("nO") == len(ner.tag_names)
    assert ner.model.get_ref("crf").get_param("transitions").shape == (13, 13)


def test_explicit_labels():
    nlp, ner = make_nlp(tag_scheme="BIO")
    examples = make_examples(nlp)
    ner.initialize(lambda: examples, nlp=nlp, labels=["PERSON", "LOC", "ORG", "X"])
    assert ner.labels == ("LOC", "ORG", "PERSON", "X")
    assert ner.tag_names[:3] == ("O", "B-LOC", "I-LOC")
    assert ner.tag_names[-2:] == ("B-X", "I-X")
    # A trained component grows (tests/test_finetune.py); a bad label is still refused.
    with pytest.raises(ValueError, match="Can't add label to component 'crf_ner'.*whitespace"):
        ner.add_label("NEW LABEL")


def test_labels_added_before_initialize():
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


def test_labels_from_initialize_config():
    """As ``spacy init labels`` + [initialize.components.crf_ner.labels] provide them."""
    nlp, ner = make_nlp()
    nlp.config["initialize"]["components"]["crf_ner"] = {"labels": ["Y", "X"]}
    nlp.initialize(get_examples=lambda: make_examples(nlp, [("No entities here.", [])]))
    assert ner.labels == ("X", "Y")


def test_unknown_label_in_gold():
    nlp, ner = make_nlp()
    examples = make_examples(nlp)
    ner.initialize(lambda: examples, nlp=nlp, labels=["PERSON"])
    with pytest.raises(ValueError, match="Unknown entity label 'LOC'.*I like London"):
        nlp.update(examples)


def test_overlapping_gold_spans():
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


def test_overfit_save_load(trained):
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


def test_loss_decreases_and_crf_params_are_trained():
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
    # get_loss agrees with update's loss, and is pure.
    scores = ner.model.predict([eg.predicted for eg in examples])
    loss, d_scores = ner.get_loss(examples, scores)
    assert numpy.isfinite(loss) and loss > 0
    assert [d.shape for d in d_scores] == [s.shape for s in scores]


def test_bio_scheme_overfits():
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


def test_shared_tok2vec_listener():
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


def test_partial_labels_train():
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


def test_all_missing_doc_is_skipped():
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


def test_empty_docs(trained):
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


@pytest.mark.parametrize("scheme", ["BILUO", "IOB1", "BIO"])
def test_training_with_sentence_boundaries(scheme):
    """Sentences are separate CRF sequences in training too, except where a gold entity
    crosses a boundary; gold tags are converted per sequence (IOB1 B-/I- depend on it)."""
    nlp, ner = make_nlp(tag_scheme=scheme)
    words = ["Paris", "Berlin", "are", "cities", "I", "saw", "New", "York", "City"]
    sent_starts = [True, True, False, False, True, False, False, True, False]
    doc = Doc(nlp.vocab, words=words, sent_starts=sent_starts)
    eg = Example.from_dict(
        doc, {"entities": ["U-LOC", "U-LOC", "O", "O", "O", "O", "B-LOC", "I-LOC", "L-LOC"]}
    )
    assert eg.predicted.has_annotation("SENT_START")
    ner.initialize(lambda: [eg], nlp=nlp)
    segments, where = ner._segments([eg.predicted], ner._golds([eg]))
    assert where == [(0, 0, 1), (0, 1, 3), (0, 4, 5)]  # no split inside "New York City"
    scores = ner.model.predict([eg.predicted])
    loss, _ = ner.get_loss([eg], scores)
    assert numpy.isfinite(loss) and loss > 0
    optimizer = ner.create_optimizer()
    for _ in range(5):
        losses = ner.update([eg], sgd=optimizer)
    assert numpy.isfinite(losses["crf_ner"])


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


def test_damaged_bytes_error(trained):
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
