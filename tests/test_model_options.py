"""Options of the model: FixedDropout, stacked LSTMs, LSTM dropout, static vectors."""

from __future__ import annotations

import copy

import numpy
import pytest
import spacy
from spacy.lang.en import English
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.api import set_dropout_rate


def make(small_model: dict, data: list, **tok2vec: object):
    """A blank English pipeline with a crf_ner of the small model, ``tok2vec`` settings
    changed, and its examples."""
    model = copy.deepcopy(small_model)
    model["tok2vec"].update(tok2vec)
    nlp = English()
    nlp.add_pipe("crf_ner", config={"model": model})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    return nlp, examples


def entities(doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def torch_lstm(nlp):
    (encode,) = [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "packed_bilstm"]
    return encode.layers[0].shims[0]._model.lstm


def fit_and_round_trip(nlp, examples, tmp_path, n_iter: int = 40):
    """Train until the sentences' gold entities come out; save, load, same entities."""
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer)
    texts = [eg.reference.text for eg in examples]
    gold = [entities(eg.reference) for eg in examples]
    assert [entities(doc) for doc in nlp.pipe(texts)] == gold
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    assert [entities(doc) for doc in loaded.pipe(texts)] == gold
    return loaded


def test_fixed_dropout_keeps_its_rate(small_model, en_train_data):
    """[training] dropout (nlp.update(drop=...)) sets Thinc's dropout layers, not the
    CRFTagger's dropout, which drops at its own configured rate."""
    small_model["dropout"] = 0.3
    nlp, examples = make(small_model, en_train_data)
    nlp.initialize(get_examples=lambda: examples)
    model = nlp.get_pipe("crf_ner").model
    (fixed,) = [node for node in model.walk() if node.name == "fixed_dropout"]
    thinc_dropouts = [node for node in model.walk() if node.name == "dropout"]
    assert thinc_dropouts  # the hash embeddings have some: they follow [training] dropout
    nlp.update(examples, drop=0.1)
    set_dropout_rate(model, 0.1)
    assert all(node.attrs["dropout_rate"] == 0.1 for node in thinc_dropouts)
    assert fixed.attrs["rate"] == 0.3
    X = numpy.ones((2000, 50), dtype="float32")
    Y, backprop = fixed(X, is_train=True)
    dropped = float((Y == 0).mean())
    assert 0.28 < dropped < 0.32
    numpy.testing.assert_allclose(Y[Y != 0], 1 / 0.7, rtol=1e-6)  # inverted dropout
    numpy.testing.assert_array_equal(backprop(numpy.ones_like(X)), Y)
    numpy.testing.assert_array_equal(fixed(X, is_train=False)[0], X)


def test_no_fixed_dropout_layer_at_rate_zero(small_model, en_train_data):
    nlp, _ = make(small_model, en_train_data)
    assert not [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "fixed_dropout"]


def test_stacked_lstm_with_dropout(small_model, en_train_data, tmp_path):
    fix_random_seed(0)
    nlp, examples = make(small_model, en_train_data, lstm_depth=2, lstm_dropout=0.25)
    lstm = torch_lstm(nlp)
    assert (lstm.num_layers, lstm.dropout, lstm.bidirectional) == (2, 0.25, True)
    loaded = fit_and_round_trip(nlp, examples, tmp_path)
    assert torch_lstm(loaded).num_layers == 2
    # The dropout between the layers is on in training only.
    model = nlp.get_pipe("crf_ner").model.get_ref("tok2vec")
    docs = [nlp.make_doc(eg.reference.text) for eg in examples]
    first, _ = model(docs, is_train=True)
    second, _ = model(docs, is_train=True)
    assert not numpy.allclose(first[0], second[0])
    numpy.testing.assert_array_equal(model.predict(docs)[0], model.predict(docs)[0])


def test_lstm_dropout_needs_depth(small_model, en_train_data):
    """With one layer there is nothing between layers to drop (torch warns otherwise)."""
    nlp, _ = make(small_model, en_train_data, lstm_depth=1, lstm_dropout=0.25)
    assert (torch_lstm(nlp).num_layers, torch_lstm(nlp).dropout) == (1, 0.0)


def test_a_saved_model_does_not_load_into_another_depth(small_model, en_train_data, tmp_path):
    nlp, examples = make(small_model, en_train_data, lstm_depth=2)
    nlp.initialize(get_examples=lambda: examples)
    nlp.to_disk(tmp_path)
    shallow = {"components": {"crf_ner": {"model": {"tok2vec": {"lstm_depth": 1}}}}}
    with pytest.raises(ValueError, match="Could not load component 'crf_ner'"):
        spacy.load(tmp_path, config=shallow)


def test_static_vectors(small_model, en_train_data, tmp_path):
    """include_static_vectors with a small vectors table built here: the emissions depend on
    the vectors, and the pipeline saves them."""
    fix_random_seed(0)
    nlp, examples = make(small_model, en_train_data, include_static_vectors=True)
    rng = numpy.random.RandomState(0)
    words = sorted({token.text for eg in examples for token in eg.reference})
    nlp.vocab.reset_vectors(width=16)
    for word in words:
        nlp.vocab.set_vector(word, rng.normal(size=16).astype("float32"))
    assert nlp.vocab.vectors.n_keys == len(words)
    loaded = fit_and_round_trip(nlp, examples, tmp_path)
    assert loaded.vocab.vectors.n_keys == len(words)
    numpy.testing.assert_array_equal(
        loaded.vocab.get_vector("London"), nlp.vocab.get_vector("London")
    )
    # Another vector for "London" changes its emissions, and only through the vectors.
    ner = nlp.get_pipe("crf_ner")
    doc = nlp.make_doc("I like London and Berlin.")
    before = ner.model.predict([doc])[0].copy()
    nlp.vocab.set_vector("London", rng.normal(size=16).astype("float32") * 3)
    after = ner.model.predict([nlp.make_doc("I like London and Berlin.")])[0]
    assert not numpy.allclose(before[2], after[2])


def test_static_vectors_without_a_vectors_table(small_model, en_train_data):
    """include_static_vectors on a pipeline without vectors: one error that says what is
    missing at initialize, not spaCy's IndexError at the first prediction."""
    nlp, examples = make(small_model, en_train_data, include_static_vectors=True)
    with pytest.raises(ValueError, match="uses static vectors .* has no vectors table"):
        nlp.initialize(get_examples=lambda: examples)


def test_word_dropout(small_model, en_train_data):
    """word_dropout zeroes whole rows of the hash embeddings in training only, at its own
    rate (not [training] dropout), and its gradient flows through the kept rows only."""
    from spacy_crf_ner.layers import WordDropout

    fix_random_seed(0)
    layer = WordDropout(0.3)
    Xs = [numpy.ones((3000, 8), dtype="float32"), numpy.ones((5, 8), dtype="float32")]
    Ys, backprop = layer(Xs, is_train=True)
    rows = Ys[0].sum(axis=1)
    assert set(numpy.unique(rows).tolist()) == {0.0, 8.0}  # whole rows, not scaled
    assert 0.27 < float((rows == 0).mean()) < 0.33
    dXs = backprop([numpy.ones_like(X) for X in Xs])
    numpy.testing.assert_array_equal(dXs[0], Ys[0])
    assert all(Y is X for X, Y in zip(Xs, layer(Xs, is_train=False)[0], strict=True))
    # In the encoder: only with word_dropout > 0, and spaCy's dropout leaves its rate alone.
    nlp, examples = make(small_model, en_train_data, word_dropout=0.2)
    (node,) = [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "word_dropout"]
    nlp.initialize(get_examples=lambda: examples)
    nlp.update(examples, drop=0.5)
    assert node.attrs["rate"] == 0.2
    plain, _ = make(small_model, en_train_data)
    assert not [n for n in plain.get_pipe("crf_ner").model.walk() if n.name == "word_dropout"]


def test_feature_dropout_replaces_the_chosen_keys():
    """FeatureDropout replaces the chosen columns' keys of whole tokens (all chosen columns
    of a token together) by the unknown key at its rate, in training only; the other columns
    are untouched, and the input is not changed in place."""
    from thinc.api import Ragged

    from spacy_crf_ner.layers import UNKNOWN_KEY, FeatureDropout

    fix_random_seed(0)
    rng = numpy.random.default_rng(0)
    keys = rng.integers(1, 2**63, size=(4000, 4), dtype="uint64")
    X = Ragged(keys.copy(), numpy.asarray([3990, 10], dtype="int32"))
    layer = FeatureDropout(0.3, [0, 2])
    Y, backprop = layer(X, is_train=True)
    numpy.testing.assert_array_equal(X.dataXd, keys)
    numpy.testing.assert_array_equal(Y.lengths, X.lengths)
    changed = Y.dataXd != keys
    assert not changed[:, [1, 3]].any()
    numpy.testing.assert_array_equal(changed[:, 0], changed[:, 2])
    assert (Y.dataXd[changed] == UNKNOWN_KEY).all()
    assert 0.27 < float(changed[:, 0].mean()) < 0.33
    assert backprop("d") == "d"
    assert layer(X, is_train=False)[0] is X


def test_word_dropout_attrs(small_model, en_train_data, tmp_path):
    """word_dropout_attrs puts a FeatureDropout of those attrs inside the hash embeddings
    (in place of WordDropout); the model learns, saves and loads; an attr the encoder does
    not embed is an error that names it."""
    fix_random_seed(0)
    nlp, examples = make(
        small_model, en_train_data, word_dropout=0.3, word_dropout_attrs=["NORM", "SHAPE"]
    )
    nodes = list(nlp.get_pipe("crf_ner").model.walk())
    (node,) = [n for n in nodes if n.name == "feature_dropout"]
    assert node.attrs == {"rate": 0.3, "columns": [0, 3]}  # of NORM, PREFIX, SUFFIX, SHAPE
    assert not [n for n in nodes if n.name == "word_dropout"]
    calls = []
    original = node._func

    def record(layer, X, is_train):
        Y, backprop = original(layer, X, is_train)
        calls.append((is_train, int((Y.dataXd != X.dataXd).any(axis=1).sum()), len(X.dataXd)))
        return Y, backprop

    node._func = record
    nlp.initialize(get_examples=lambda: examples)
    nlp.update(examples)
    node._func = original
    (is_train, n_dropped, n_tokens), *_ = [call for call in calls if call[0]]
    assert 0 < n_dropped < n_tokens  # it runs in training, on the encoder's own keys
    loaded = fit_and_round_trip(nlp, examples, tmp_path, n_iter=60)
    assert [n.name for n in loaded.get_pipe("crf_ner").model.walk()].count("feature_dropout") == 1
    for rate in (0.3, 0.0):
        with pytest.raises(ValueError, match="LEMMA is not one"):
            make(small_model, en_train_data, word_dropout=rate, word_dropout_attrs=["LEMMA"])
    plain, _ = make(small_model, en_train_data, word_dropout=0.0, word_dropout_attrs=["NORM"])
    names = {n.name for n in plain.get_pipe("crf_ner").model.walk()}
    assert not names & {"feature_dropout", "word_dropout"}


def test_input_dropout(small_model, en_train_data, tmp_path):
    """input_dropout drops elements of the BiLSTM's input (the hash and character features
    concatenated) in training only, at its own rate; the model still learns and round-trips."""
    fix_random_seed(0)
    nlp, examples = make(small_model, en_train_data, input_dropout=0.4)
    model = nlp.get_pipe("crf_ner").model
    fixed = [n for n in model.get_ref("tok2vec").walk() if n.name == "fixed_dropout"]
    assert [node.attrs["rate"] for node in fixed] == [0.4]
    nlp.initialize(get_examples=lambda: examples)
    tok2vec = model.get_ref("tok2vec")
    docs = [eg.predicted for eg in examples]
    seen = []
    original = tok2vec.get_ref("encode")._func

    def record(layer, X, is_train):
        seen.append((is_train, numpy.concatenate([x for x in X])))
        return original(layer, X, is_train)

    tok2vec.get_ref("encode")._func = record
    try:
        tok2vec.predict(docs)
        tok2vec.begin_update(docs)
    finally:
        tok2vec.get_ref("encode")._func = original
    (_, at_inference), (_, in_training) = seen
    assert not (at_inference == 0).any()
    dropped = in_training == 0
    assert 0.3 < float(dropped.mean()) < 0.5
    kept = ~dropped
    numpy.testing.assert_allclose(in_training[kept], at_inference[kept] / 0.6, rtol=1e-5)
    # Training with it still fits the sentences, and it saves and loads.
    plain, _ = make(small_model, en_train_data)
    assert not [n for n in plain.get_pipe("crf_ner").model.get_ref("tok2vec").walk()
                if n.name == "fixed_dropout"]  # fmt: skip
    nlp, examples = make(small_model, en_train_data, input_dropout=0.2)
    fit_and_round_trip(nlp, examples, tmp_path, n_iter=60)


@pytest.mark.parametrize("depth", [1, 2])
def test_bilstm_matches_torch_packed_lstm(depth):
    """The padded, per-direction LSTM gives the outputs and gradients of ``nn.LSTM`` over a
    ``PackedSequence`` with the same weights: padding enters neither direction."""
    import torch
    from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

    from spacy_crf_ner.layers import _make_lstm_module

    torch.manual_seed(0)
    module = _make_lstm_module(5, 3, depth, 0.0)
    lengths = [4, 1, 9, 2, 9, 3]  # ragged, unsorted, with ties: several padding groups
    flat = torch.randn(sum(lengths), 5, requires_grad=True)
    ours = module(flat, torch.tensor(lengths))
    seqs = torch.split(flat, lengths)
    packed, _ = module.lstm(pack_sequence(list(seqs), enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed, batch_first=True)
    theirs = torch.cat([padded[i, :n] for i, n in enumerate(lengths)])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * weights).sum(), [flat, *module.parameters()])
    expected = torch.autograd.grad((theirs * weights).sum(), [flat, *module.parameters()])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_padding_groups_bound_the_padding():
    from spacy_crf_ner.layers import _padding_groups

    lengths = [100_000, 12, 30, 25, 7, 40]
    groups = _padding_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [0] in groups  # the long doc is not padded to by the sentences
    for group in groups:
        padded = len(group) * max(lengths[i] for i in group)
        assert padded <= 1.25 * sum(lengths[i] for i in group)
    assert _padding_groups([5, 5, 5]) == [[0, 1, 2]]
