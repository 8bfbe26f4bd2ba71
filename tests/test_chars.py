"""The character CNN word encoder (``spacy_crf_ner/chars.py``) and its encoder option."""

from __future__ import annotations

import numpy
import pytest
import spacy
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.types import Ragged

from spacy_crf_ner.chars import CharCNN, distinct_words, word_codes


@pytest.fixture(scope="module")
def en():
    return spacy.blank("en")


def test_distinct_words_and_their_codes(en):
    docs = [en("Zoë hifi 東京"), en(""), en("hifu Zoë")]
    words, token_word = distinct_words(docs, max_chars=3)
    assert words == ["Zoë", "hif", "東京"]  # "hifi" and "hifu" are both cut to "hif"
    assert token_word.tolist() == [0, 1, 2, 1, 0]
    codes, lengths = word_codes(words)
    assert lengths.tolist() == [3, 3, 2]
    assert codes[:, 0].tolist() == [ord(c) for c in "Zoëhif東京"]
    assert distinct_words([en("")], max_chars=3)[0] == []
    empty_codes, empty_lengths = word_codes([])
    assert empty_codes.shape == (0, 1) and empty_lengths.shape == (0,)


def test_each_word_encoded_once_gives_the_per_token_output_and_gradient(en):
    """Encoding a batch's distinct words once and summing their tokens' gradients must equal
    encoding every token on its own (the CNN's forward/backprop before it was deduplicated)."""
    fix_random_seed(0)
    model = CharCNN(8, rows=300, max_chars=6)
    model.initialize()
    docs = [en("the cat and the dog , the end ."), en("Dogs and cats , cats and dogs")]
    rng = numpy.random.default_rng(0)
    Ys, backprop = model(docs, is_train=True)
    dYs = [rng.normal(size=Y.shape).astype("float32") for Y in Ys]
    backprop(dYs)
    encode = model.layers[0]
    params = [(node, name) for node in model.walk() for name in node.param_names]
    grads = [node.get_grad(name).copy() for node, name in params]
    for node, name in params:
        node.set_grad(name, numpy.zeros_like(node.get_grad(name)))
    words = [t.text[:6] for doc in docs for t in doc]
    codes, lengths = word_codes(words)
    X = Ragged(model.ops.asarray2i(codes, dtype="uint64"), model.ops.asarray1i(lengths))
    expected, backprop_each = encode(X, is_train=True)
    numpy.testing.assert_allclose(numpy.concatenate(Ys), expected, rtol=1e-6)
    backprop_each(numpy.concatenate(dYs))
    assert len(params) >= 3  # the character table and the Maxout's weights and bias
    for (node, name), grad in zip(params, grads, strict=True):
        assert numpy.abs(grad).sum() > 0, name
        numpy.testing.assert_allclose(grad, node.get_grad(name), rtol=1e-4, atol=1e-6)


def test_word_vectors_see_every_character_of_the_word_only(en):
    fix_random_seed(0)
    model = CharCNN(16, rows=500)
    model.initialize()
    # Words longer than CharacterEmbed's first-4 + last-4: a middle character changes it.
    first, second = model.predict(
        [en("Internationalisation rocks"), en("Internatiunalisation rocks")]
    )
    assert first.shape == (2, 16)
    assert not numpy.allclose(first[0], second[0])
    numpy.testing.assert_array_equal(first[1], second[1])  # "rocks": its own characters only
    # Beyond max_chars nothing counts.
    cut = CharCNN(16, rows=500, max_chars=5)
    cut.initialize()
    a, b = cut.predict([en("Berlinxx"), en("Berlinyy")])
    numpy.testing.assert_array_equal(a, b)
    assert [y.shape for y in model.predict([en(""), en("a")])] == [(0, 16), (1, 16)]


def test_gradient_reaches_the_character_table(en):
    fix_random_seed(0)
    model = CharCNN(8, rows=300)
    model.initialize()
    docs = [en("Paris is big"), en("")]
    Ys, backprop = model(docs, is_train=True)
    backprop([numpy.ones_like(Y) for Y in Ys])
    (table,) = [node for node in model.walk() if node.name == "hashembed"]
    assert numpy.abs(table.get_grad("E")).sum() > 0


def test_bad_settings():
    with pytest.raises(ValueError, match="max_chars >= 1"):
        CharCNN(8, max_chars=0)


def test_encoder_with_char_cnn_trains_and_round_trips(small_model, en_train_data, tmp_path):
    fix_random_seed(0)
    small_model["tok2vec"].update({"char_cnn": 16, "char_features": 0})
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    assert [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "char_cnn"]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in en_train_data]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer)
    texts = [eg.reference.text for eg in examples]
    gold = [[(e.start_char, e.end_char, e.label_) for e in eg.reference.ents] for eg in examples]
    assert [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)] == gold
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    docs = [nlp.make_doc(t) for t in texts]
    ours = nlp.get_pipe("crf_ner").model.predict(docs)
    theirs = loaded.get_pipe("crf_ner").model.predict(docs)
    for a, b in zip(ours, theirs, strict=True):
        numpy.testing.assert_array_equal(a, b)
