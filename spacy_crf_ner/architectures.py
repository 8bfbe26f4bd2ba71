"""Registered architectures: the CRF tagger head and a BiLSTM token encoder.

An architecture is a small function that wires layers together; the layers themselves live
in ``layers.py``. Torch is only imported when a model is built (inside ``layers``), because
spaCy imports this module through its entry points whenever it looks up an architecture.
"""

from collections.abc import Sequence

import numpy
from spacy.ml.models.tok2vec import CharacterEmbed, MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, chain, concatenate, with_array
from thinc.layers import Linear
from thinc.types import Floats2d

from .chars import CharCNN, CharLSTM
from .context import DocumentContext
from .layers import CRFLayer, FeatureDropout, FixedDropout, PackedBiLSTM, WordDropout
from .ngrams import NgramEmbed

# Characters per word for ``char_features``: the first and the last four UTF-8 bytes.
CHAR_COUNT = 8


class TagResizeError(ValueError):
    """A model whose output can't be given more tags (it is not a ``CRFTagger``)."""


@registry.architectures("spacy_crf_ner.CRFTagger.v1")
def build_crf_tagger(
    tok2vec: Model[list[Doc], list[Floats2d]],
    nO: int | None = None,
    dropout: float = 0.0,
) -> Model[list[Doc], list[Floats2d]]:
    """Token vectors -> per-token tag scores (emissions) -> CRF.

    tok2vec: any token-to-vector model: an encoder, a Tok2VecListener, a TransformerListener.
    nO: the number of CRF tags; the component sets it from its labels and tag scheme.
    dropout: dropout on the token vectors before the emission layer, at this fixed rate
        (spaCy's ``[training] dropout`` does not change it).

    The model outputs the emissions, one (n_tokens, nO) array per doc; the CRF layer
    (ref "crf") holds the transition, start and end scores that the component uses to
    compute the loss and to decode. Refs: "tok2vec", "output_layer", "crf".
    """
    width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    output_layer = Linear(nO=nO, nI=width)
    head: Model = output_layer if dropout <= 0 else chain(FixedDropout(dropout), output_layer)
    crf = CRFLayer(nO=nO)
    model = chain(tok2vec, with_array(head), crf)
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", output_layer)
    model.set_ref("crf", crf)
    return model


def resize_tags(model: Model, old_to_new: Sequence[int], n_tags: int) -> None:
    """Give a ``CRFTagger`` model ``n_tags`` tags, keeping every learned weight.

    Old tag ``i`` becomes tag ``old_to_new[i]`` in the emission layer (a row of ``W`` and
    ``b``) and in the CRF (a row and a column of ``transitions``, an entry of ``start`` and
    ``end``): adding a label inserts its tags among the others (tags are sorted by label).
    The tags that are new get zero weights and zero CRF scores: no preference before they
    are trained (the component keeps them from being predicted until then, and a bias far
    below the others would take Adam thousands of steps to undo). The emission and CRF
    layers are replaced by larger ones (new Thinc ids: an optimizer starts their Adam
    moments afresh).
    """
    output_layer, crf = model.get_ref("output_layer"), model.get_ref("crf")
    if not (output_layer.has_param("W") and output_layer.has_param("b") and crf.has_param("start")):
        raise TagResizeError(
            f"the model's output layer '{output_layer.name}' is not an initialized Linear "
            "layer with weights W and b (as in spacy_crf_ner.CRFTagger.v1)"
        )
    old_n = output_layer.get_dim("nO")
    index = numpy.asarray(old_to_new, dtype="int64")
    if len(index) != old_n or len(set(index.tolist())) != old_n or not 0 <= index.min():
        raise TagResizeError(f"invalid tag mapping {list(old_to_new)} for {old_n} tags")
    if n_tags <= int(index.max()):
        raise TagResizeError(f"invalid tag mapping {list(old_to_new)} for {n_tags} new tags")
    ops = output_layer.ops
    xp_index = ops.asarray1i(index)

    old_W, old_b = output_layer.get_param("W"), output_layer.get_param("b")
    W = ops.alloc2f(n_tags, old_W.shape[1])
    b = ops.alloc1f(n_tags)
    W[xp_index] = old_W
    b[xp_index] = old_b
    larger_output = Linear(nO=n_tags, nI=old_W.shape[1])
    larger_output.set_param("W", W)
    larger_output.set_param("b", b)

    larger_crf = CRFLayer(nO=n_tags)
    old_trans = crf.get_param("transitions")
    transitions = crf.ops.alloc2f(n_tags, n_tags)
    transitions[xp_index[:, None], xp_index[None, :]] = old_trans
    larger_crf.set_param("transitions", transitions)
    for name in ("start", "end"):
        param = crf.ops.alloc1f(n_tags)
        param[xp_index] = crf.get_param(name)
        larger_crf.set_param(name, param)
    larger_crf.attrs.update(crf.attrs)

    encoder = {node.id for node in model.get_ref("tok2vec").walk()}
    for node in model.walk():
        # The combinators between the encoder and the output (chain, with_array) have no
        # params; their output width follows the layers they wrap.
        if node.id not in encoder and node not in (output_layer, crf):
            if node.has_dim("nO") and node.get_dim("nO") == old_n and not node.param_names:
                node.set_dim("nO", n_tags, force=True)
    model.replace_node(output_layer, larger_output)
    model.replace_node(crf, larger_crf)


@registry.architectures("spacy_crf_ner.BiLSTMEncoder.v1")
def build_bilstm_encoder(
    width: int = 96,
    embed_size: int = 2000,
    attrs: list[str] | None = None,
    include_static_vectors: bool = False,
    char_features: int = 0,
    lstm_width: int = 96,
    lstm_depth: int = 1,
    lstm_dropout: float = 0.0,
    ngram_size: int = 0,
    ngram_rows: int = 0,
    word_dropout: float = 0.0,
    char_cnn: int = 0,
    input_dropout: float = 0.0,
    word_dropout_attrs: list[str] | None = None,
    ngram_dropout: float = 0.0,
    doc_context: bool = False,
    char_lstm: int = 0,
) -> Model[list[Doc], list[Floats2d]]:
    """Hash embeddings (+ optional character and n-gram features) -> bidirectional LSTM.

    width: width of the embeddings (spaCy's MultiHashEmbed, mixed by a Maxout layer).
    embed_size: rows of each hash-embedding table.
    attrs: token attributes to embed, default NORM, PREFIX, SUFFIX, SHAPE.
    include_static_vectors: also embed the vocab's static vectors (needs [initialize] vectors).
    char_features: 0 for none; otherwise the width of each character embedding of spaCy's
        CharacterEmbed (the first and last 4 UTF-8 bytes of the word plus a LOWER embedding),
        concatenated to the hash embeddings. Useful for capitalisation and morphology of
        unseen words; pointless with one-character tokens (Chinese "char" segmentation).
    lstm_width: hidden size of each LSTM direction; the output width is 2 * lstm_width.
    lstm_depth: number of stacked BiLSTM layers.
    lstm_dropout: dropout between stacked LSTM layers (needs lstm_depth > 1).
    ngram_size: 0 for none; 2 adds hashed embeddings of each token's bigrams with its previous
        and its next token; 3 also the centred trigram (``ngrams.py``). Made for Chinese
        with one token per character, where they stand in for a word lexicon.
    ngram_rows: rows of each n-gram table (0: embed_size). Bigrams are far more numerous
        than characters: give them more rows.
    ngram_dropout: in training, zero all of a token's n-gram embeddings at this rate, on
        their own draw (``word_dropout`` leaves them alone). A bigram is seen far fewer
        times than its characters, and without it the bigram tables are learnt by heart
        within a few epochs (BENCHMARKS.md §11.10). At 0.6 bigrams gain about 0.3
        test F on Resume and Weibo, dev up on two seeds of three (§11.22).
    word_dropout: in training, zero a token's hash embeddings (the ``attrs`` features) at
        this rate, as if it were an unknown word; character and n-gram features stay.
    word_dropout_attrs: null for the above; otherwise the attrs (of ``attrs``) that word
        dropout drops, e.g. ``["NORM"]``: a dropped token's keys for them become an
        unknown-word key and its other attrs (affixes, shape) stay, as they do for an
        unseen word of real text (``layers.FeatureDropout``). On CoNLL-2003 it does worse
        than dropping the whole vector (BENCHMARKS.md §11.20).
    char_cnn: 0 for none; otherwise the width of a character CNN word vector (Ma & Hovy
        2016; ``chars.py``) over all of each word's characters (up to 20), concatenated to
        the other features. An alternative to ``char_features`` for English and other
        alphabetic languages.
    char_lstm: 0 for none; otherwise the width of a character BiLSTM word vector (Lample et
        al. 2016; ``chars.CharLSTM``, half of it a direction) in place of ``char_cnn``.
    input_dropout: dropout on what the BiLSTM reads (all the features above, concatenated),
        at this fixed rate, in training only. Lample et al. (2016) put 0.5 here; it also
        reaches the character features, which ``word_dropout`` leaves alone.
    doc_context: append to each token's BiLSTM vector the mean BiLSTM vector of all
        occurrences of its word in the same doc (``context.py``): a name repeated bare
        later in a document gets what its first, telling mention had. Output width
        ``4 * lstm_width``.
    """
    if attrs is None:
        attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
    embed: Model[list[Doc], list[Floats2d]] = MultiHashEmbed(
        width=width,
        attrs=list(attrs),
        rows=[embed_size] * len(attrs),
        include_static_vectors=include_static_vectors,
    )
    if word_dropout_attrs is not None:
        # Checked at any rate: a misspelt attr is reported, not ignored until the rate is set.
        _drop_features(embed, list(attrs), list(word_dropout_attrs), word_dropout)
    elif word_dropout > 0:
        embed = chain(embed, WordDropout(word_dropout))
    embed_width = width
    if char_features > 0:
        chars = CharacterEmbed(
            width=width,
            rows=embed_size,
            nM=char_features,
            nC=CHAR_COUNT,
            include_static_vectors=False,
        )
        embed = concatenate(embed, chars)
        embed_width += width
    if char_cnn > 0 and char_lstm > 0:
        raise ValueError(
            "[crf_ner] BiLSTMEncoder: set char_cnn or char_lstm, not both "
            f"(char_cnn {char_cnn}, char_lstm {char_lstm}); 0 turns one off"
        )
    if char_cnn > 0:
        embed = concatenate(embed, CharCNN(char_cnn, rows=embed_size))
        embed_width += char_cnn
    if char_lstm > 0:
        embed = concatenate(embed, CharLSTM(char_lstm, rows=embed_size))
        embed_width += char_lstm
    if ngram_size:
        ngrams = NgramEmbed(width, ngram_rows or embed_size, ngram_size)
        ngram_width = ngrams.get_dim("nO")
        if ngram_dropout > 0:
            ngrams = chain(ngrams, WordDropout(ngram_dropout))
        embed = concatenate(embed, ngrams)
        embed_width += ngram_width
    lstm = PackedBiLSTM(2 * lstm_width, embed_width, depth=lstm_depth, dropout=lstm_dropout)
    # Inference ignores the dropout layer: ONNX export reads the "embed" and "encode" refs.
    model = (
        chain(embed, with_array(FixedDropout(input_dropout)), lstm)
        if input_dropout > 0
        else chain(embed, lstm)
    )
    model.set_dim("nO", 2 * lstm_width)
    if doc_context:
        model = DocumentContext(model)
    model.set_ref("embed", embed)
    model.set_ref("encode", lstm)
    return model


def _drop_features(embed: Model, attrs: list[str], dropped: list[str], rate: float) -> None:
    """Put a ``FeatureDropout`` of ``dropped`` into spaCy's MultiHashEmbed, between its
    feature extraction and its hash tables (MultiHashEmbed has no option for it)."""
    unknown = [attr for attr in dropped if attr not in attrs]
    if not dropped or unknown:
        raise ValueError(
            f"[crf_ner] word_dropout_attrs {dropped} must name some of the encoder's attrs "
            f"{attrs}" + (f" ({', '.join(unknown)} is not one)" if unknown else "")
        )
    columns = [attrs.index(attr) for attr in dropped]
    if rate <= 0:
        return
    for node in embed.walk():
        names = [layer.name for layer in node.layers[:2]]
        if names == ["extract_features", "list2ragged"]:
            node.layers.insert(2, FeatureDropout(rate, columns))
            return
    raise ValueError(f"[crf_ner] word_dropout_attrs: no feature extraction in '{embed.name}'")
