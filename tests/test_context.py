"""The document-context layer (``spacy_crf_ner/context.py``) and the encoder option."""

from __future__ import annotations

import numpy
import pytest
import spacy
from spacy.training import Example
from spacy.util import fix_random_seed
from thinc.api import Model

from spacy_crf_ner.context import DocumentContext, occurrence_groups


@pytest.fixture(scope="module")
def en():
    return spacy.blank("en")


def fixed_vectors(arrays: list[numpy.ndarray], seen: list) -> Model:
    """A stand-in encoder: returns ``arrays`` (one per doc) and keeps the gradient it gets."""

    def forward(model, docs, is_train):
        def backprop(dYs):
            seen[:] = [numpy.array(dY) for dY in dYs]
            return []

        return [numpy.array(a) for a in arrays], backprop

    return Model("fixed", forward, dims={"nO": arrays[0].shape[1]})


def test_groups_are_the_same_word_in_the_same_doc(en):
    docs = [en("the cat saw the dog"), en(""), en("the end")]
    index, counts = occurrence_groups(docs)
    first = index[:5]
    assert first[0] == first[3] and len(set(first.tolist())) == 4
    second = index[5:]
    assert second[0] != first[0]  # "the" of another doc is another group
    assert counts[first[0]] == 2 and counts.sum() == 7


def test_output_is_vector_and_mean_of_its_word(en):
    docs = [en("Akram took five . Akram said"), en(""), en("Akram")]
    rng = numpy.random.RandomState(0)
    arrays = [rng.randn(len(doc), 3).astype("float32") for doc in docs]
    model = DocumentContext(fixed_vectors(arrays, []))
    model.initialize(X=docs)
    out = model.predict(docs)
    assert [o.shape for o in out] == [(6, 6), (0, 6), (1, 6)]
    numpy.testing.assert_allclose(out[0][:, :3], arrays[0])
    mean = (arrays[0][0] + arrays[0][4]) / 2
    numpy.testing.assert_allclose(out[0][0, 3:], mean, rtol=1e-6)
    numpy.testing.assert_allclose(out[0][4, 3:], mean, rtol=1e-6)
    numpy.testing.assert_allclose(out[0][1, 3:], arrays[0][1])
    numpy.testing.assert_allclose(out[2][0, 3:], arrays[2][0])  # not pooled across docs


def test_gradient_matches_finite_differences(en):
    docs = [en("a b a c a"), en("b b c")]
    rng = numpy.random.RandomState(1)
    arrays = [rng.randn(len(doc), 2).astype("float64") for doc in docs]
    weights = [rng.randn(len(doc), 4) for doc in docs]

    def loss(arrs):
        model = DocumentContext(fixed_vectors(arrs, []))
        model.initialize(X=docs)
        out = model.predict(docs)
        return sum(float((o * w).sum()) for o, w in zip(out, weights, strict=True))

    seen: list = []
    model = DocumentContext(fixed_vectors(arrays, seen))
    model.initialize(X=docs)
    _, backprop = model.begin_update(docs)
    backprop([w.astype("float32") for w in weights])
    eps = 1e-4
    for d, array in enumerate(arrays):
        for i in range(array.shape[0]):
            for j in range(array.shape[1]):
                up = [a.copy() for a in arrays]
                down = [a.copy() for a in arrays]
                up[d][i, j] += eps
                down[d][i, j] -= eps
                numeric = (loss(up) - loss(down)) / (2 * eps)
                assert seen[d][i, j] == pytest.approx(numeric, rel=1e-3, abs=1e-3)


def test_encoder_with_doc_context_trains_and_round_trips(
    small_model, en_train_data, learns_and_round_trips
):
    fix_random_seed(0)
    small_model["tok2vec"].update({"doc_context": True})
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in en_train_data]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    tok2vec = nlp.get_pipe("crf_ner").model.get_ref("tok2vec")
    assert tok2vec.get_dim("nO") == 4 * small_model["tok2vec"]["lstm_width"]
    learns_and_round_trips(nlp, examples, optimizer)
