"""Entity-level probabilities from a CRF: exact span posteriors and candidate spans.

Bridges the tag schemes (``tags.py``) and the CRF engine (``crf.py``); no spaCy import. The
probability of an entity is the posterior mass of every tag path in which exactly that
labelled span is an entity, computed from forward and backward vectors (not an average of
token marginals), summed over the scheme's ways of writing it (``TagScheme.segment_patterns``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from spacy_crf_ner.crf import CRFConstraints, segment_probabilities
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
    """Exact probability of each entity, ``(N,)``, in one vectorised CRF call."""
    index = {name: i for i, name in enumerate(tag_names)}
    num_tags = len(tag_names)
    rows, begins, tag_rows, befores, afters, owner = [], [], [], [], [], []
    width = max((end - start for _, start, end, _ in entities), default=1)
    for n, (row, start, end, label) in enumerate(entities):
        for tags, not_before, not_after in scheme.segment_patterns(label, end - start):
            rows.append(row)
            begins.append(start)
            tag_rows.append([index[t] for t in tags] + [-1] * (width - len(tags)))
            befores.append([name in not_before for name in tag_names])
            afters.append([name in not_after for name in tag_names])
            owner.append(n)
    device = emissions.device
    if not rows:
        return torch.zeros((0,), dtype=torch.float32, device=device)
    probs = segment_probabilities(
        emissions,
        mask,
        *params,
        torch.tensor(rows, device=device),
        torch.tensor(begins, device=device),
        torch.tensor(tag_rows, device=device),
        not_before=torch.tensor(befores, device=device).view(-1, num_tags),
        not_after=torch.tensor(afters, device=device).view(-1, num_tags),
        constraints=constraints,
    )
    totals = probs.new_zeros(len(entities))
    totals.index_add_(0, torch.tensor(owner, device=device), probs)
    return totals.clamp(0.0, 1.0)


def candidate_entities(
    lengths: Sequence[int], labels: Sequence[str], max_length: int
) -> list[Entity]:
    """Every labelled span of up to ``max_length`` tokens in each sequence."""
    return [
        (row, start, start + size, label)
        for row, n in enumerate(lengths)
        for start in range(n)
        for size in range(1, min(max_length, n - start) + 1)
        for label in labels
    ]
