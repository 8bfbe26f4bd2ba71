"""Hashed token n-gram features (``spacy_crf_ner/ngrams.py``) and the encoder option."""

from __future__ import annotations

import subprocess
import sys

import numpy
import pytest
import spacy
from spacy.training import Example
from spacy.util import fix_random_seed

from spacy_crf_ner.ngrams import NgramEmbed, ngram_keys


@pytest.fixture(scope="module")
def zh():
    return spacy.blank("zh")  # the "char" segmenter: one token per character


def keys_of(nlp, text: str, size: int = 3) -> numpy.ndarray:
    return ngram_keys(nlp.make_doc(text), size)


def test_keys_are_the_token_ngrams(zh):
    keys = keys_of(zh, "北京人在北京")
    assert keys.shape == (6, 3) and keys.dtype == numpy.uint64
    # (北, 京) is the next-bigram of token 0 and of token 4, and the previous-bigram of 1 and 5.
    assert keys[0, 1] == keys[4, 1] == keys[1, 0] == keys[5, 0]
    # Order matters: (京, 人) is not (人, 京); the centred trigrams differ by position.
    assert keys[1, 1] != keys_of(zh, "人京")[0, 1]
    assert len(set(keys[:, 2].tolist())) == 6


def test_doc_edges(zh):
    """A token's features depend on its neighbours only: at the doc's edges the missing
    neighbour is a marker, the same in every doc."""
    long, short = keys_of(zh, "我爱北京"), keys_of(zh, "北京")
    assert long[2, 1] == short[0, 1]  # (北, 京)
    assert long[3, 0] == short[1, 0]  # (北, 京)
    assert long[3, 1] == short[1, 1]  # (京, end)
    assert long[2, 0] != short[0, 0]  # (爱, 北) vs (start, 北)
    assert long[3, 2] == short[1, 2]  # (北, 京, end)
    assert long[2, 2] != short[0, 2]  # (爱, 北, 京) vs (start, 北, 京)
    assert keys_of(zh, "北")[0, 0] == keys_of(zh, "北海")[0, 0]  # (start, 北)
    assert keys_of(zh, "北")[0, 1] == keys_of(zh, "海北")[1, 1]  # (北, end)
    assert ngram_keys(zh.make_doc(""), 2).shape == (0, 2)


def test_sentence_edges(zh):
    """With sentence boundaries, a sentence's features are those of the sentence alone."""
    doc = zh.make_doc("我去北京。他来上海。")
    for i, token in enumerate(doc):
        token.is_sent_start = i in (0, 5)
    keys = ngram_keys(doc, 3)
    numpy.testing.assert_array_equal(keys[:5], keys_of(zh, "我去北京。"))
    numpy.testing.assert_array_equal(keys[5:], keys_of(zh, "他来上海。"))
    # Without boundaries the two sentences see each other.
    plain = keys_of(zh, "我去北京。他来上海。")
    assert plain[4, 1] != keys[4, 1] and plain[5, 0] != keys[5, 0]


def test_keys_are_the_same_in_another_process(zh):
    """String hashes, not Python's hash(): a pipeline's features do not change between
    processes (PYTHONHASHSEED differs) or machines."""
    text = "张三在北京大学读书"
    code = (
        "import spacy, sys; from spacy_crf_ner.ngrams import ngram_keys; "
        f"sys.stdout.write(ngram_keys(spacy.blank('zh').make_doc({text!r}), 3).tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout
    assert bytes.fromhex(out) == keys_of(zh, text).tobytes()


def test_bad_size():
    with pytest.raises(ValueError, match="ngram_size must be 2 or 3"):
        NgramEmbed(8, 100, 4)


def test_embedding_depends_on_the_neighbours_only(zh):
    model = NgramEmbed(8, 1000, 2)
    docs = [zh.make_doc("我爱北京天安门"), zh.make_doc("我爱北京故宫")]
    model.initialize(X=docs)
    first, second = model.predict(docs)
    assert first.shape == (7, 16)
    numpy.testing.assert_array_equal(first[:3], second[:3])  # 我 爱 北: same neighbours
    assert not numpy.allclose(first[3], second[3])  # 京: next neighbour 天 vs 故


def test_encoder_with_ngrams_trains_and_round_trips(
    small_model, zh_train_data, learns_and_round_trips
):
    fix_random_seed(0)
    small_model["tok2vec"].update({"ngram_size": 2, "ngram_rows": 800, "char_features": 0})
    nlp = spacy.blank("zh")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in zh_train_data]
    tables = [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "hashembed"]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    assert any(t.attrs["seed"] >= 101 for t in tables)  # the n-gram tables are there
    learns_and_round_trips(nlp, examples, optimizer)


def test_ngram_dropout_drops_whole_tokens_in_training_only(zh):
    """``ngram_dropout`` zeroes all of a token's n-gram columns together, on its own draw (the
    hash embeddings are untouched), and only in training."""
    from spacy_crf_ner.architectures import build_bilstm_encoder

    fix_random_seed(0)
    encoder = build_bilstm_encoder(
        width=8, embed_size=100, attrs=["NORM"], lstm_width=4, ngram_size=3, ngram_dropout=0.5
    )
    docs = [zh.make_doc("我爱北京天安门。" * 20)]
    encoder.initialize(X=docs)
    embed = encoder.get_ref("embed")
    train, _ = embed(docs, is_train=True)
    test, _ = embed(docs, is_train=False)
    ngrams = train[0][:, 8:]  # after the 8 columns of the mixed hash embeddings
    assert ngrams.shape == (160, 24)
    dropped = ~ngrams.any(axis=1)
    assert 0.3 < dropped.mean() < 0.7
    assert ngrams[~dropped].all(axis=1).all()  # a kept token keeps all three columns
    numpy.testing.assert_array_equal(train[0][:, :8], test[0][:, :8])
    numpy.testing.assert_array_equal(ngrams[~dropped], test[0][~dropped, 8:])
    assert test[0][:, 8:].any(axis=1).all()
