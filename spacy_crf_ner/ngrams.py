"""Hashed token n-gram features: the neighbours of a token as extra embeddings.

Chinese NER with one token per character gains most from character bigrams (Zhang & Yang
2018; Peng & Dredze 2016): "北京" tells more than "北" and "京" apart, and no lexicon has to
be downloaded. For token ``i`` the features are the bigram with the previous token
``(i-1, i)`` and the bigram with the next one ``(i, i+1)``; with trigrams also the centred
``(i-1, i, i+1)``. Outside the doc, and across a sentence boundary when the doc has
sentence boundaries, the neighbour is a boundary marker, so a sentence's features do not
depend on the sentence before it (the CRF decodes sentences separately with
``respect_sentences``).

An n-gram's key is a fixed arithmetic mix of its tokens' NORM hashes (spaCy's string hashes,
the same in every process and on every machine), then embedded by Thinc's ``HashEmbed``
like spaCy's own ``MultiHashEmbed`` features; the keys are computed in numpy, on the spaCy
side, and need no vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy
from spacy.attrs import NORM, SENT_START
from spacy.tokens import Doc
from thinc.api import HashEmbed, Model, chain, concatenate, list2ragged, ragged2list, with_array
from thinc.types import Floats2d, Ints2d

# Stand-ins for the neighbour before the first and after the last token of a sentence or doc.
# String hashes are 64-bit murmurhash values: 1 and 2 are never the hash of a real string.
BEFORE_START = numpy.uint64(1)
AFTER_END = numpy.uint64(2)
# Odd 64-bit multipliers (from splitmix64) that make (a, b) and (b, a) different keys.
_MIX = (
    numpy.uint64(0x9E3779B97F4A7C15),
    numpy.uint64(0xBF58476D1CE4E5B9),
    numpy.uint64(0x94D049BB133111EB),
)
# HashEmbed seeds apart from MultiHashEmbed's (8, 9, ...) and CharacterEmbed's (5).
_SEED = 101


def ngram_columns(ngram_size: int) -> int:
    """Feature columns per token: 2 for bigrams, 3 with the centred trigram."""
    if ngram_size not in (2, 3):
        raise ValueError(f"[crf_ner] ngram_size must be 2 or 3 (or 0 for none): {ngram_size}")
    return 2 if ngram_size == 2 else 3


def ngram_keys(doc: Doc, ngram_size: int) -> numpy.ndarray:
    """``(len(doc), columns)`` uint64 keys of each token's n-grams (see the module doc)."""
    columns = ngram_columns(ngram_size)
    norms = doc.to_array(NORM).astype("uint64").reshape(-1)
    n = norms.shape[0]
    keys = numpy.zeros((n, columns), dtype="uint64")
    if n == 0:
        return keys
    previous = numpy.empty_like(norms)
    following = numpy.empty_like(norms)
    previous[0], previous[1:] = BEFORE_START, norms[:-1]
    following[-1], following[:-1] = AFTER_END, norms[1:]
    if doc.has_annotation("SENT_START"):
        starts = doc.to_array(SENT_START).reshape(-1) == 1
        starts[0] = True
        previous[starts] = BEFORE_START
        # The token before a sentence start ends its sentence.
        following[numpy.flatnonzero(starts[1:])] = AFTER_END
    with numpy.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        keys[:, 0] = previous * _MIX[0] + norms * _MIX[1]
        keys[:, 1] = norms * _MIX[0] + following * _MIX[1]
        if columns == 3:
            keys[:, 2] = previous * _MIX[0] + norms * _MIX[1] + following * _MIX[2]
    return keys


def NgramFeatures(ngram_size: int) -> Model[list[Doc], list[Ints2d]]:
    """Docs -> each doc's n-gram keys (no parameters, no gradient)."""
    ngram_columns(ngram_size)  # validate now, not at the first batch
    return Model("ngram_features", _features_forward, attrs={"ngram_size": ngram_size})


def _features_forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[Ints2d], Callable]:
    size = model.attrs["ngram_size"]
    keys = [model.ops.asarray2i(ngram_keys(doc, size), dtype="uint64") for doc in docs]
    return keys, lambda d_keys: []


def NgramEmbed(width: int, rows: int, ngram_size: int) -> Model[list[Doc], list[Floats2d]]:
    """Docs -> ``(len(doc), width * columns)`` embeddings of each token's n-grams: one
    ``HashEmbed`` table of ``rows`` rows per column (previous bigram, next bigram, trigram).
    """
    columns = ngram_columns(ngram_size)
    tables = [
        HashEmbed(width, rows, column=column, seed=_SEED + column, dropout=0.0)
        for column in range(columns)
    ]
    model: Model[list[Doc], list[Floats2d]] = chain(
        NgramFeatures(ngram_size),
        list2ragged(),
        with_array(concatenate(*tables)),
        ragged2list(),
    )
    model.set_dim("nO", width * columns)
    return model
