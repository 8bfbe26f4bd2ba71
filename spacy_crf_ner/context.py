"""Document context: each token also sees the mean encoding of every occurrence of its word
in the same document.

A BiLSTM reads a token in the context of its neighbours only. In news text a name is often
introduced with telling context ("Prime Minister Benjamin Netanyahu", "Wasim Akram took five
wickets") and later repeated bare ("Netanyahu said", "Akram"), where its neighbours say little.
Pooling the encoder's vectors over all occurrences of the same word (same ``ORTH``) in the doc
hands the bare mention what the first one knew, as document-level models of NER do (e.g. Akbik
et al. 2019's pooled embeddings, over a corpus; Luo et al. 2020, over the document). The layer
appends the mean over the word's occurrences to each token's vector (a word seen once gets its
own vector twice), so the output is twice as wide. It is a function of the doc alone: a doc's
tags do not depend on the other docs of its batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy
from spacy.attrs import ORTH
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d


def occurrence_groups(docs: list[Doc]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Each token's group (the same ``ORTH`` in the same doc), int32 over the batch's tokens
    doc after doc, and each group's number of tokens."""
    groups = []
    offset = 0
    for doc in docs:
        keys = doc.to_array(ORTH).reshape(-1)
        _, inverse = numpy.unique(keys, return_inverse=True)
        groups.append(inverse.reshape(-1) + offset)
        offset += int(inverse.max()) + 1 if len(keys) else 0
    index = numpy.concatenate(groups).astype("int32") if groups else numpy.zeros(0, "int32")
    counts = numpy.bincount(index, minlength=offset).astype("float32")
    return index, counts


def DocumentContext(
    encoder: Model[list[Doc], list[Floats2d]],
) -> Model[list[Doc], list[Floats2d]]:
    """Docs -> ``encoder``'s vectors with the mean vector of the token's word in its doc
    appended: ``(len(doc), 2 * encoder nO)``."""
    model: Model[list[Doc], list[Floats2d]] = Model(
        "doc_context",
        _context_forward,
        init=_context_init,
        layers=[encoder],
        dims={"nO": None},
    )
    if encoder.has_dim("nO") and encoder.get_dim("nO"):
        model.set_dim("nO", 2 * encoder.get_dim("nO"))
    return model


def _context_init(model: Model, X: list[Doc] | None = None, Y: object = None) -> None:
    encoder = model.layers[0]
    encoder.initialize(X=X)
    model.set_dim("nO", 2 * encoder.get_dim("nO"), force=True)


def _context_forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[Floats2d], Callable]:
    ops = model.ops
    vectors, backprop_encoder = model.layers[0](docs, is_train)
    lengths = ops.asarray1i([len(doc) for doc in docs])
    if not sum(len(doc) for doc in docs):  # counted on the host: no device sync
        width = model.get_dim("nO")
        return [ops.alloc2f(0, width) for _ in docs], lambda dYs: backprop_encoder(
            [ops.alloc2f(0, width // 2) for _ in docs]
        )
    flat = ops.flatten(vectors)
    width = flat.shape[1]
    groups, counts = occurrence_groups(docs)
    index = ops.asarray1i(groups)
    scale = ops.asarray2f(1.0 / counts.reshape(-1, 1))
    sums = ops.alloc2f(len(counts), width)
    ops.scatter_add(sums, index, flat)
    means = sums * scale
    output = ops.xp.concatenate([flat, means[index]], axis=1)

    def backprop(dYs: list[Floats2d]) -> list:
        d_out = ops.flatten(dYs)
        d_means = ops.alloc2f(len(counts), width)
        ops.scatter_add(d_means, index, ops.xp.ascontiguousarray(d_out[:, width:]))
        d_flat = d_out[:, :width] + (d_means * scale)[index]
        return backprop_encoder(ops.unflatten(d_flat, lengths))

    return ops.unflatten(output, lengths), backprop
