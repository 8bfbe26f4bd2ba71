"""Character word encoders: a CNN (Ma & Hovy 2016) or a BiLSTM (Lample et al. 2016) over every
character of a word, not a fixed few.

spaCy's ``CharacterEmbed`` (the ``char_features`` option) embeds the first and last four
characters of a word at fixed positions, which misses the middle of long words and treats a
suffix at another position as another feature. The CNN reads each word's characters
(up to ``max_chars``), embeds them, mixes each with its neighbours (a window of
``2 * window + 1`` characters, a Maxout layer) and max-pools over the word: a word vector of
``width`` that sees capitalisation, digits, hyphens and affixes wherever they are. It is
built of Thinc layers only (hash embeddings, ``expand_window``, ``Maxout``, ``reduce_max``),
so it saves, loads and runs on GPU like the rest of spaCy's embeddings.

The BiLSTM reads the same characters (embedded by their own hash table) in both directions
and gives the forward LSTM's last state beside the backward LSTM's (Lample et al.'s word
encoder): order-aware, where the CNN's max-pool keeps only which windows occur. Its LSTM is
``layers.PackedBiLSTM`` with each word as a sequence, so its weights save as msgpack'd arrays
like the word-level BiLSTM's.
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
    ragged2list,
    reduce_max,
    with_array,
)
from thinc.types import Floats2d, Ragged

from .layers import PackedBiLSTM

# HashEmbed seeds apart from MultiHashEmbed's (8, 9, ...), CharacterEmbed's (5) and the
# n-gram tables' (101, ...).
_SEED = 201
_LSTM_SEED = 202


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


def distinct_words(docs: list[Doc], max_chars: int) -> tuple[list[str], numpy.ndarray]:
    """The distinct words of a batch as the CNN reads them (``cut_word``), in order of first
    occurrence, and each token's word: an int32 index over the batch's tokens, doc after doc."""
    words: dict[str, int] = {}
    token_word = numpy.fromiter(
        (words.setdefault(cut_word(t.text, max_chars), len(words)) for doc in docs for t in doc),
        dtype="int32",
        count=sum(len(doc) for doc in docs),
    )
    return list(words), token_word


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
    return _word_encoder("char_cnn", encode, width, max_chars)


def CharLSTM(
    width: int, *, char_width: int = 25, rows: int = 2000, max_chars: int = 20
) -> Model[list[Doc], list[Floats2d]]:
    """Docs -> ``(len(doc), width)`` character-BiLSTM vectors of each token: the last state
    of each direction (``width / 2`` each). Lample et al. (2016): 25-wide characters, 25
    hidden units a direction."""
    if max_chars < 1 or width < 2 or width % 2:
        raise ValueError(
            f"[crf_ner] CharLSTM: need max_chars >= 1 and an even width (two directions): "
            f"max_chars {max_chars}, width {width}"
        )
    encode: Model[Ragged, Floats2d] = chain(
        with_array(HashEmbed(char_width, rows, column=0, seed=_LSTM_SEED, dropout=0.0)),
        ragged2list(),
        PackedBiLSTM(width, char_width),
        final_states(),
    )
    return _word_encoder("char_lstm", encode, width, max_chars)


def final_states() -> Model[list[Floats2d], Floats2d]:
    """BiLSTM outputs of each sequence ``(n, 2h)`` -> ``(sequences, 2h)``: the forward half at
    the last step beside the backward half at the first, the states after reading it all."""
    return Model("final_states", _final_states_forward)


def _final_states_forward(
    model: Model, Ys: list[Floats2d], is_train: bool
) -> tuple[Floats2d, Callable]:
    ops = model.ops
    lengths = numpy.asarray([len(Y) for Y in Ys], dtype="int32")
    if (lengths < 1).any():
        raise ValueError("[crf_ner] final_states: every sequence needs at least one step")
    flat = ops.flatten(Ys)
    half = flat.shape[1] // 2
    last = ops.asarray1i(numpy.cumsum(lengths) - 1)
    first = ops.asarray1i(numpy.cumsum(lengths) - lengths)
    output = ops.xp.concatenate([flat[last, :half], flat[first, half:]], axis=1)

    def backprop(dY: Floats2d) -> list[Floats2d]:
        d_flat = ops.alloc2f(*flat.shape)
        # Within a column half each sequence has one row: plain assignment, no collisions.
        d_flat[last, :half] = dY[:, :half]
        d_flat[first, half:] = dY[:, half:]
        return ops.unflatten(d_flat, ops.asarray1i(lengths))

    return output, backprop


def _word_encoder(name: str, encode: Model, width: int, max_chars: int) -> Model:
    return Model(
        name,
        _char_words_forward,
        init=_char_words_init,
        layers=[encode],
        attrs={"max_chars": max_chars},
        dims={"nO": width},
    )


def _char_words_init(model: Model, X: list[Doc] | None = None, Y: object = None) -> None:
    """Every dimension is known from the config: no sample needed."""
    model.layers[0].initialize()


def _char_words_forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    """Each distinct word of the batch is encoded once (one Ragged of character sequences),
    then its vector is gathered for every token: running text repeats "the", "," and names,
    so a batch has several times fewer words than tokens. Backprop sums the tokens' gradients
    onto their word, which is the gradient of encoding every token on its own: the encoders
    have no dropout, so a word's vector does not depend on the token it is read for. The ONNX
    export encodes words the same way (``onnx_pipe``)."""
    ops = model.ops
    encode = model.layers[0]
    width = model.get_dim("nO")
    doc_lengths = numpy.asarray([len(doc) for doc in docs], dtype="int32")
    if not doc_lengths.sum():
        return [ops.alloc2f(0, width) for _ in docs], lambda dYs: []
    words, token_word = distinct_words(docs, model.attrs["max_chars"])
    codes, word_lengths = word_codes(words)
    chars = Ragged(ops.asarray2i(codes, dtype="uint64"), ops.asarray1i(word_lengths))
    word_vectors, backprop_encode = encode(chars, is_train)
    index = ops.asarray1i(token_word)
    vectors = word_vectors[index]

    def backprop(dYs: list[Floats2d]) -> list:
        d_words = ops.alloc2f(len(words), width)
        ops.scatter_add(d_words, index, ops.flatten(dYs))
        backprop_encode(d_words)
        return []

    return ops.unflatten(vectors, ops.asarray1i(doc_lengths)), backprop
