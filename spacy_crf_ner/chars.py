"""A character CNN word encoder (Ma & Hovy 2016): every character of a word, not a fixed few.

spaCy's ``CharacterEmbed`` (the ``char_features`` option) embeds the first and last four
characters of a word at fixed positions, which misses the middle of long words and treats a
suffix at another position as another feature. The CNN reads each word's characters
(up to ``max_chars``), embeds them, mixes each with its neighbours (a window of
``2 * window + 1`` characters, a Maxout layer) and max-pools over the word: a word vector of
``width`` that sees capitalisation, digits, hyphens and affixes wherever they are. It is
built of Thinc layers only (hash embeddings, ``expand_window``, ``Maxout``, ``reduce_max``),
so it saves, loads and runs on GPU like the rest of spaCy's embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy
from spacy.tokens import Doc
from thinc.api import (
    HashEmbed,
    Maxout,
    Model,
    chain,
    expand_window,
    reduce_max,
    with_array,
)
from thinc.types import Floats2d, Ragged

# HashEmbed seed apart from MultiHashEmbed's (8, 9, ...), CharacterEmbed's (5) and the
# n-gram tables' (101, ...).
_SEED = 201


def cut_word(text: str, max_chars: int) -> str:
    """The characters of a word the CNN reads: its first ``max_chars`` (a space if empty)."""
    return text[:max_chars] or " "


def word_codes(words: list[str]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The Unicode code points of ``words``, flat ``(n_chars, 1)`` uint64, and each word's
    number of characters."""
    lengths = numpy.fromiter((len(w) for w in words), dtype="int32", count=len(words))
    if not words:
        return numpy.zeros((0, 1), dtype="uint64"), lengths
    codes = numpy.frombuffer("".join(words).encode("utf-32-le"), dtype="<u4")
    return codes.astype("uint64").reshape(-1, 1), lengths


def char_codes(doc: Doc, max_chars: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The Unicode code points of each token's first ``max_chars`` characters, flat
    ``(n_chars, 1)`` uint64, and each token's number of characters (>= 1)."""
    return word_codes([cut_word(token.text, max_chars) for token in doc])


def CharCNN(
    width: int, *, char_width: int = 32, rows: int = 2000, window: int = 1, max_chars: int = 20
) -> Model[list[Doc], list[Floats2d]]:
    """Docs -> ``(len(doc), width)`` character-CNN vectors of each token."""
    if max_chars < 1 or window < 0:
        raise ValueError(f"[crf_ner] CharCNN: need max_chars >= 1, window >= 0: {max_chars}")
    encode: Model[Ragged, Floats2d] = chain(
        with_array(HashEmbed(char_width, rows, column=0, seed=_SEED, dropout=0.0)),
        expand_window(window_size=window),
        with_array(Maxout(width, char_width * (2 * window + 1), nP=2, normalize=True)),
        reduce_max(),
    )
    return Model(
        "char_cnn",
        _char_cnn_forward,
        init=_char_cnn_init,
        layers=[encode],
        attrs={"max_chars": max_chars},
        dims={"nO": width},
    )


def _char_cnn_init(model: Model, X: list[Doc] | None = None, Y: object = None) -> None:
    """Every dimension is known from the config: no sample needed."""
    model.layers[0].initialize()


def _char_cnn_forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    """All the batch's words in one Ragged (a word = a sequence of characters), one pass of
    the encoder, then the word vectors are split back into docs."""
    ops = model.ops
    encode = model.layers[0]
    per_doc = [char_codes(doc, model.attrs["max_chars"]) for doc in docs]
    doc_lengths = numpy.asarray([len(doc) for doc in docs], dtype="int32")
    if not doc_lengths.sum():
        width = model.get_dim("nO")
        return [ops.alloc2f(0, width) for _ in docs], lambda dYs: []
    codes = numpy.concatenate([c for c, _ in per_doc])
    word_lengths = numpy.concatenate([n for _, n in per_doc])
    chars = Ragged(ops.asarray2i(codes, dtype="uint64"), ops.asarray1i(word_lengths))
    vectors, backprop_encode = encode(chars, is_train)

    def backprop(dYs: list[Floats2d]) -> list:
        backprop_encode(ops.flatten(dYs))
        return []

    return ops.unflatten(vectors, ops.asarray1i(doc_lengths)), backprop
