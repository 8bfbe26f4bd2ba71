"""Registered architectures: the CRF tagger head and a BiLSTM token encoder.

An architecture is a small function that wires layers together; the layers themselves live
in ``layers.py``. Torch is only imported when a model is built (inside ``layers``), because
spaCy imports this module through its entry points whenever it looks up an architecture.
"""

from spacy.ml.models.tok2vec import CharacterEmbed, MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, chain, concatenate, with_array
from thinc.layers import Linear
from thinc.types import Floats2d

from .layers import CRFLayer, FixedDropout, PackedBiLSTM

# Characters per word for ``char_features``: the first and the last four UTF-8 bytes.
CHAR_COUNT = 8


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
) -> Model[list[Doc], list[Floats2d]]:
    """Hash embeddings (+ optional character features) -> bidirectional LSTM.

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
    """
    if attrs is None:
        attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
    embed: Model[list[Doc], list[Floats2d]] = MultiHashEmbed(
        width=width,
        attrs=list(attrs),
        rows=[embed_size] * len(attrs),
        include_static_vectors=include_static_vectors,
    )
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
        embed_width = 2 * width
    lstm = PackedBiLSTM(2 * lstm_width, embed_width, depth=lstm_depth, dropout=lstm_dropout)
    model = chain(embed, lstm)
    model.set_dim("nO", 2 * lstm_width)
    model.set_ref("embed", embed)
    model.set_ref("encode", lstm)
    return model
