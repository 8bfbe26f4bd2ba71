"""Candidate spans of a long document in bounded memory, and equal to the reference
enumeration (every span of up to max_candidate_length tokens, scored one by one)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from spacy_crf_ner.tags import SCHEME_NAMES, get_scheme

# Peak resident memory of one process that runs crf_ner over one long doc (no sentence
# boundaries: one CRF sequence), with entity_probs or with candidates. Each setting runs in a
# fresh process, so that ru_maxrss is its own peak.
PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from spacy.lang.en import English
    from spacy.tokens import Doc
    from spacy.training import Example

    torch.set_num_threads(1)
    setting, n_tokens = sys.argv[1], int(sys.argv[2])
    model = {
        "@architectures": "spacy_crf_ner.CRFTagger.v1",
        "tok2vec": {
            "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
            "width": 32, "embed_size": 500, "char_features": 8, "lstm_width": 32,
        },
    }
    config = {"model": model, "entity_probs": True}
    if setting == "candidates":
        config["candidate_threshold"] = 0.05
    nlp = English()
    ner = nlp.add_pipe("crf_ner", config=config)
    for label in ("LOC", "MISC", "ORG", "PER"):
        ner.add_label(label)
    nlp.initialize(lambda: [Example(nlp.make_doc("Paris"), nlp.make_doc("Paris"))])
    words = ("Angela Merkel visited New York City , then Paris and Berlin .".split() * n_tokens)
    doc = Doc(nlp.vocab, words=words[:n_tokens])
    begin = time.perf_counter()
    doc = nlp(doc)
    seconds = time.perf_counter() - begin
    found = len(doc.spans.get("crf_ner_candidates", []))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "seconds": seconds, "candidates": found}))
    """
)


def peak_memory(setting: str, n_tokens: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, setting, str(n_tokens)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_candidates_of_a_long_doc_in_bounded_memory():
    """20,000 tokens, 4 labels, spans of up to 10 tokens (800,000 candidates): the process
    with candidates peaks at most 1.5x as high as the one with entity_probs alone."""
    n_tokens = 20_000
    alone = peak_memory("entity_probs", n_tokens)
    with_candidates = peak_memory("candidates", n_tokens)
    assert with_candidates["candidates"] > 0
    assert with_candidates["peak"] <= 1.5 * alone["peak"], (alone, with_candidates)


@pytest.mark.parametrize("scheme_name", SCHEME_NAMES)
def test_candidates_equal_the_reference_enumeration(scheme_name, monkeypatch):
    """Scored by (label, length) groups in small chunks, the candidates are exactly the spans
    of the reference enumeration at or above the threshold, with the same probabilities."""
    import spacy_crf_ner.crf as crf_module
    from spacy_crf_ner.confidence import (
        candidate_entities,
        candidate_probabilities,
        entity_probabilities,
    )
    from spacy_crf_ner.crf import CRFConstraints, SpanPosteriors

    monkeypatch.setattr(crf_module, "SEGMENT_CHUNK", 7)  # many chunks, ragged last one
    scheme = get_scheme(scheme_name)
    labels = ["A", "B"]
    names = scheme.tag_names(labels)
    gen = torch.Generator().manual_seed(0)
    lengths = [9, 4, 0, 6]
    emissions = torch.randn(len(lengths), max(lengths), len(names), generator=gen)
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    k = len(names)
    params = tuple(torch.randn(shape, generator=gen) for shape in [(k, k), (k,), (k,)])
    constraints = CRFConstraints(*(torch.as_tensor(m) for m in scheme.allowed_transitions(names)))
    reference = candidate_entities(lengths, labels, max_length=5)
    probs = entity_probabilities(emissions, mask, params, constraints, scheme, names, reference)
    threshold = 0.02
    expected = [
        (*span, float(p)) for span, p in zip(reference, probs, strict=True) if p >= threshold
    ]
    posteriors = SpanPosteriors(emissions, mask, *params, constraints)
    found = candidate_probabilities(posteriors, scheme, names, labels, 5, threshold)
    assert [c[:4] for c in found] == [c[:4] for c in expected]
    assert [c[4] for c in found] == pytest.approx([c[4] for c in expected], abs=1e-6)
