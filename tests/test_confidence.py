"""Entity probabilities against brute-force enumeration for every tag scheme."""

from __future__ import annotations

import itertools

import pytest
import torch

from spacy_crf_ner.confidence import candidate_entities, entity_probabilities
from spacy_crf_ner.crf import CRFConstraints
from spacy_crf_ner.tags import SCHEME_NAMES, get_scheme


def valid_paths(scheme, names, length):
    for path in itertools.product(range(len(names)), repeat=length):
        tags = [names[i] for i in path]
        if not scheme.validate(tags):
            yield path, scheme.tags_to_spans(tags)


@pytest.mark.parametrize("scheme_name", SCHEME_NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_entity_probabilities_equal_brute_force(scheme_name, seed):
    scheme = get_scheme(scheme_name)
    labels = ["A", "B"] if scheme_name in ("IOB1", "BIO") else ["A"]
    names = scheme.tag_names(labels)
    num_tags, length = len(names), 4
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(2, length, num_tags, generator=gen, dtype=torch.float64) * 2
    params = tuple(
        torch.randn(shape, generator=gen, dtype=torch.float64)
        for shape in [(num_tags, num_tags), (num_tags,), (num_tags,)]
    )
    constraints = CRFConstraints(*(torch.as_tensor(m) for m in scheme.allowed_transitions(names)))
    mask = torch.tensor([[True] * length, [True] * 3 + [False]])
    entities = candidate_entities([length, 3], labels, max_length=length)
    probs = entity_probabilities(emissions, mask, params, constraints, scheme, names, entities)
    trans, start, end = params
    for row, n in enumerate([length, 3]):
        scores = {}
        for path, spans in valid_paths(scheme, names, n):
            score = start[path[0]] + end[path[-1]] + emissions[row, 0, path[0]]
            for t in range(1, n):
                score = score + trans[path[t - 1], path[t]] + emissions[row, t, path[t]]
            scores[path] = (score, set(spans))
        total = torch.logsumexp(torch.stack([s for s, _ in scores.values()]), 0)
        for i, (r, s, e, label) in enumerate(entities):
            if r != row:
                continue
            expected = sum(
                (torch.exp(v - total) for v, spans in scores.values() if (s, e, label) in spans),
                torch.tensor(0.0, dtype=torch.float64),
            )
            torch.testing.assert_close(probs[i], expected, msg=f"{scheme_name} {(s, e, label)}")


def test_candidates_enumerate_spans():
    assert candidate_entities([2], ["X"], 3) == [(0, 0, 1, "X"), (0, 0, 2, "X"), (0, 1, 2, "X")]
    assert candidate_entities([3, 0], ["X", "Y"], 1) == [
        (0, t, t + 1, lab) for t in range(3) for lab in ("X", "Y")
    ]
