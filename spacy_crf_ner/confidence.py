"""Entity-level probabilities from a CRF: exact span posteriors and candidate spans.

Bridges the tag schemes (``tags.py``) and the CRF engine (``crf.py``); no spaCy import. The
probability of an entity is the posterior mass of every tag path in which exactly that
labelled span is an entity, computed from forward and backward vectors (not an average of
token marginals), summed over the scheme's ways of writing it (``TagScheme.segment_patterns``).

Spans are scored in groups of one label and one length, whose patterns are the same tag rows
for every span of the group: the tag rows are expanded views, nothing per span is built in
Python, and ``SpanPosteriors`` works through each group in chunks of bounded memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy
import torch
from torch import Tensor

from spacy_crf_ner.crf import CRFConstraints, SpanPosteriors
from spacy_crf_ner.tags import TagScheme

Entity = tuple[int, int, int, str]
"""(sequence index in the batch, start token, end token exclusive, label)."""


def entity_probabilities(
    emissions: Tensor,
    mask: Tensor,
    params: tuple[Tensor, Tensor, Tensor],
    constraints: CRFConstraints | None,
    scheme: TagScheme,
    tag_names: Sequence[str],
    entities: Sequence[Entity],
) -> Tensor:
    """Exact probability of each entity, ``(N,)``, from one forward-backward pass."""
    posteriors = SpanPosteriors(emissions, mask, *params, constraints)
    return span_probabilities(posteriors, scheme, tag_names, entities)


def span_probabilities(
    posteriors: SpanPosteriors,
    scheme: TagScheme,
    tag_names: Sequence[str],
    entities: Sequence[Entity],
) -> Tensor:
    """Exact probability of each entity, ``(N,)``, from the posteriors of its batch."""
    device = posteriors.log_z.device
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for n, (_, start, end, label) in enumerate(entities):
        groups[(label, end - start)].append(n)
    totals = torch.zeros(len(entities), dtype=posteriors.dtype, device=device)
    for (label, length), members in groups.items():
        rows = torch.tensor([entities[n][0] for n in members], device=device)
        begins = torch.tensor([entities[n][1] for n in members], device=device)
        probs = _group_probabilities(posteriors, scheme, tag_names, label, length, rows, begins)
        totals[torch.tensor(members, device=device)] = probs
    return totals


def candidate_probabilities(
    posteriors: SpanPosteriors,
    scheme: TagScheme,
    tag_names: Sequence[str],
    labels: Sequence[str],
    max_length: int,
    threshold: float,
) -> list[tuple[int, int, int, str, float]]:
    """Every labelled span of up to ``max_length`` tokens whose probability is at least
    ``threshold``, as (row, start, end, label, probability), in the order of
    ``candidate_entities``. Only the spans kept reach the host."""
    lengths = posteriors.lengths
    device = lengths.device
    # Every (row, position) of the batch, flat: the start tokens of the candidates.
    rows = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    starts = torch.arange(len(rows), device=device) - torch.repeat_interleave(first, lengths)
    room = lengths[rows] - starts  # tokens from each start to the end of its sequence
    found: list[tuple[Tensor, Tensor, int, int, Tensor]] = []
    for length in range(1, max_length + 1):
        fits = room >= length
        if not bool(fits.any()):
            break
        rows_l, starts_l = rows[fits], starts[fits]
        for label_id, label in enumerate(labels):
            probs = _group_probabilities(
                posteriors, scheme, tag_names, label, length, rows_l, starts_l
            )
            keep = probs.double() >= threshold
            found.append((rows_l[keep], starts_l[keep], length, label_id, probs[keep]))
    if not found:
        return []
    row_a = torch.cat([f[0] for f in found]).cpu().numpy()
    start_a = torch.cat([f[1] for f in found]).cpu().numpy()
    length_a = numpy.concatenate([numpy.full(len(f[0]), f[2]) for f in found])
    label_a = numpy.concatenate([numpy.full(len(f[0]), f[3]) for f in found])
    prob_a = torch.cat([f[4] for f in found]).double().cpu().numpy()
    order = numpy.lexsort((label_a, length_a, start_a, row_a))
    return [
        (
            int(row_a[i]),
            int(start_a[i]),
            int(start_a[i] + length_a[i]),
            labels[label_a[i]],
            float(prob_a[i]),
        )
        for i in order
    ]


def _group_probabilities(
    posteriors: SpanPosteriors,
    scheme: TagScheme,
    tag_names: Sequence[str],
    label: str,
    length: int,
    rows: Tensor,
    begins: Tensor,
) -> Tensor:
    """Probability of the entities ``label`` of ``length`` tokens at ``(rows, begins)``:
    the sum over the scheme's patterns of writing them (they are disjoint events)."""
    device = rows.device
    index = {name: i for i, name in enumerate(tag_names)}
    total = torch.zeros(len(rows), dtype=posteriors.dtype, device=device)
    for tags, not_before, not_after in scheme.segment_patterns(label, length):
        tag_row = torch.tensor([index[t] for t in tags], device=device)
        before = torch.tensor([name in not_before for name in tag_names], device=device)
        after = torch.tensor([name in not_after for name in tag_names], device=device)
        total += posteriors.probabilities(
            rows,
            begins,
            tag_row.expand(len(rows), -1),
            not_before=before if not_before else None,
            not_after=after if not_after else None,
        )
    return total.clamp(0.0, 1.0)


def candidate_entities(
    lengths: Sequence[int], labels: Sequence[str], max_length: int
) -> list[Entity]:
    """Every labelled span of up to ``max_length`` tokens in each sequence (a reference
    enumeration, for tests: ``candidate_probabilities`` never builds this list)."""
    return [
        (row, start, start + size, label)
        for row, n in enumerate(lengths)
        for start in range(n)
        for size in range(1, min(max_length, n - start) + 1)
        for label in labels
    ]
