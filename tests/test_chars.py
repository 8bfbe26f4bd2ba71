"""The character CNN word encoder (``spacy_crf_ner/chars.py``) and its encoder option."""

from __future__ import annotations

import numpy
import pytest
import spacy
from spacy.training import Example
from spacy.util import fix_random_seed

from spacy_crf_ner.chars import CharCNN, char_codes


@pytest.fixture(scope="module")
def en():
    return spacy.blank("en")


def test_char_codes(en):
    codes, lengths = char_codes(en("Zoë hifi 東京"), max_chars=3)
    assert lengths.tolist() == [3, 3, 2]  # "hifi" is cut at 3 characters
    assert codes[:, 0].tolist() == [ord(c) for c in "Zoëhif東京"]
    empty_codes, empty_lengths = char_codes(en(""), max_chars=3)
    assert empty_codes.shape == (0, 1) and empty_lengths.shape == (0,)


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
