"""The character word encoders, CNN and BiLSTM (``spacy_crf_ner/chars.py``), and their
encoder options."""

from __future__ import annotations

import numpy
import pytest
import spacy
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.types import Ragged

from spacy_crf_ner.chars import CharCNN, CharLSTM, distinct_words, final_states, word_codes


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


@pytest.mark.parametrize("encoder", [CharCNN, CharLSTM])
def test_each_word_encoded_once_gives_the_per_token_output_and_gradient(en, encoder):
    """Encoding a batch's distinct words once and summing their tokens' gradients must equal
    encoding every token on its own (the CNN's forward/backprop before it was deduplicated)."""
    fix_random_seed(0)
    model = encoder(8, rows=300, max_chars=6)
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
    # The LSTM's weights are torch parameters: their gradients are in ``.grad``.
    torch_params = [p for node in model.walk() for shim in node.shims
                    for p in shim._model.parameters()]  # fmt: skip
    torch_grads = [p.grad.clone() for p in torch_params]
    for p in torch_params:
        p.grad = None
    words = [t.text[:6] for doc in docs for t in doc]
    codes, lengths = word_codes(words)
    X = Ragged(model.ops.asarray2i(codes, dtype="uint64"), model.ops.asarray1i(lengths))
    expected, backprop_each = encode(X, is_train=True)
    numpy.testing.assert_allclose(numpy.concatenate(Ys), expected, rtol=1e-6)
    backprop_each(numpy.concatenate(dYs))
    # The character table and the Maxout's weights and bias, or the LSTM's weights and biases.
    assert len(params) + len(torch_params) >= 3
    for (node, name), grad in zip(params, grads, strict=True):
        assert numpy.abs(grad).sum() > 0, name
        numpy.testing.assert_allclose(grad, node.get_grad(name), rtol=1e-4, atol=1e-6)
    for param, grad in zip(torch_params, torch_grads, strict=True):
        assert grad.abs().sum() > 0
        numpy.testing.assert_allclose(grad.numpy(), param.grad.numpy(), rtol=1e-4, atol=1e-6)


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


def test_char_lstm_gives_each_directions_state_after_the_whole_word(en):
    """The word vector is torch's LSTM run over the word alone: the forward direction's output
    at the last character beside the backward direction's at the first (words of 1-10
    characters, so a wrong step shows)."""
    import torch

    fix_random_seed(0)
    model = CharLSTM(8, char_width=6, rows=300)
    model.initialize()
    doc = en("Zoë a Paris-based x")
    vectors = model.predict([doc])[0]
    (table,) = [n for n in model.walk() if n.name == "hashembed"]
    (wrapped,) = [n for n in model.walk() if n.name == "pytorch"]
    lstm = wrapped.shims[0]._model.lstm
    for token, vector in zip(doc, vectors, strict=True):
        codes, _ = word_codes([token.text])
        chars = torch.tensor(table.predict(numpy.ascontiguousarray(codes[:, 0])))
        with torch.no_grad():
            out, _ = lstm(chars.unsqueeze(0))  # (1, n, 8): both directions at every step
        numpy.testing.assert_allclose(vector[:4], out[0, -1, :4].numpy(), rtol=1e-5, atol=1e-6)
        numpy.testing.assert_allclose(vector[4:], out[0, 0, 4:].numpy(), rtol=1e-5, atol=1e-6)
    # Order counts: the same characters in another order give another vector.
    ab, ba = model.predict([en("ab ba")])[0]
    assert not numpy.allclose(ab, ba)


def test_final_states_gradient_matches_finite_differences():
    model = final_states()
    rng = numpy.random.default_rng(0)
    Ys = [rng.normal(size=(n, 6)).astype("float64") for n in (3, 1, 2)]
    out, backprop = model(Ys, is_train=True)
    assert out.shape == (3, 6)
    numpy.testing.assert_array_equal(out[1], Ys[1][0])  # one step: both halves from it
    dY = rng.normal(size=out.shape)
    grads = backprop(dY)
    for i, Y in enumerate(Ys):
        for index in numpy.ndindex(*Y.shape):
            bumped = [y.copy() for y in Ys]
            bumped[i][index] += 1e-6
            numeric = ((model(bumped, is_train=False)[0] - out) * dY).sum() / 1e-6
            assert abs(numeric - grads[i][index]) < 1e-4, (i, index)
    with pytest.raises(ValueError, match="at least one step"):
        model([numpy.zeros((0, 6), dtype="float32")], is_train=False)


def test_bad_settings(small_model):
    with pytest.raises(ValueError, match="max_chars >= 1"):
        CharCNN(8, max_chars=0)
    with pytest.raises(ValueError, match="even width"):
        CharLSTM(7)
    small_model["tok2vec"].update({"char_cnn": 16, "char_lstm": 16})
    with pytest.raises(ValueError, match="char_cnn or char_lstm, not both"):
        spacy.blank("en").add_pipe("crf_ner", config={"model": small_model})


@pytest.mark.parametrize("option", ["char_cnn", "char_lstm"])
def test_encoder_with_char_words_trains_and_round_trips(
    small_model, en_train_data, tmp_path, option
):
    fix_random_seed(0)
    small_model["tok2vec"].update({option: 16, "char_features": 0})
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    assert [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == option]
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
