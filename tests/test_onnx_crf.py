"""The CRF as ONNX graphs (``onnx_crf.py``), run by onnxruntime alone, against the torch
engine (``LinearChainCRF``) on random ragged batches under tag-scheme constraints."""

from __future__ import annotations

import numpy
import pytest
import torch

from spacy_crf_ner.crf import LinearChainCRF
from spacy_crf_ner.tags import get_scheme

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from spacy_crf_ner.onnx_crf import crf_model  # noqa: E402


def random_crf(scheme: str, labels: list[str], seed: int) -> LinearChainCRF:
    names = get_scheme(scheme).tag_names(labels)
    crf = LinearChainCRF(len(names), get_scheme(scheme).allowed_transitions(names))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in crf.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 2)
    return crf


def session(crf: LinearChainCRF, probabilities: bool = False, opset: int = 17):
    params = [p.detach().numpy() for p in (crf.transitions, crf.start_transitions,
                                           crf.end_transitions)]  # fmt: skip
    constraints = [c.numpy() for c in crf.constraints]
    model = crf_model(*params, constraints, probabilities=probabilities, opset=opset)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def ragged_batch(seed: int, batch: int, max_len: int, num_tags: int):
    rng = numpy.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=batch)
    lengths[rng.integers(batch)] = max_len  # the padded width is the longest sequence
    emissions = rng.normal(scale=3.0, size=(batch, max_len, num_tags)).astype("float32")
    mask = numpy.arange(max_len)[None, :] < lengths[:, None]
    return emissions, lengths.astype("int64"), mask


CASES = [("BILUO", ["PER", "LOC", "ORG"], 0), ("BIO", ["PER", "LOC"], 1),
         ("BIOES", ["A"], 2), ("IOB1", ["X", "Y"], 3)]  # fmt: skip


@pytest.mark.parametrize("scheme,labels,seed", CASES)
@pytest.mark.parametrize("batch,max_len", [(1, 1), (7, 13), (16, 40)])
def test_viterbi_graph_decodes_like_linear_chain_crf(scheme, labels, seed, batch, max_len):
    crf = random_crf(scheme, labels, seed)
    emissions, lengths, mask = ragged_batch(seed + batch, batch, max_len, crf.num_tags)
    paths, scores = session(crf).run(None, {"emissions": emissions, "lengths": lengths})
    expected_paths, expected_scores = crf.decode(
        torch.from_numpy(emissions), torch.from_numpy(mask), algorithm="sequential"
    )
    numpy.testing.assert_array_equal(paths, expected_paths.numpy())
    numpy.testing.assert_allclose(scores, expected_scores.double().numpy(), rtol=1e-5, atol=1e-4)
    assert paths.shape == (batch, max_len) and (paths[~mask] == -1).all()


def test_viterbi_graph_takes_any_batch_and_length_with_one_session():
    crf = random_crf("BILUO", ["PER", "LOC"], 5)
    run = session(crf)
    for seed, (batch, max_len) in enumerate([(3, 9), (1, 2), (12, 30), (2, 1)]):
        emissions, lengths, mask = ragged_batch(seed, batch, max_len, crf.num_tags)
        paths, _ = run.run(None, {"emissions": emissions, "lengths": lengths})
        expected, _ = crf.decode(torch.from_numpy(emissions), torch.from_numpy(mask))
        numpy.testing.assert_array_equal(paths, expected.numpy())


def test_viterbi_graph_with_forbidden_tags_at_some_positions():
    """-inf emissions (tags a token may not take) are decoded around, as by the torch CRF."""
    crf = random_crf("BILUO", ["PER", "LOC"], 7)
    emissions, lengths, mask = ragged_batch(11, 8, 12, crf.num_tags)
    rng = numpy.random.default_rng(3)
    forbidden = rng.random(emissions.shape) < 0.3
    o_tag = get_scheme("BILUO").tag_names(["PER", "LOC"]).index("O")  # always allowed
    forbidden[..., o_tag] = False
    emissions = numpy.where(forbidden, -numpy.inf, emissions).astype("float32")
    paths, _ = session(crf).run(None, {"emissions": emissions, "lengths": lengths})
    expected, _ = crf.decode(torch.from_numpy(emissions), torch.from_numpy(mask))
    numpy.testing.assert_array_equal(paths, expected.numpy())


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("scheme,labels,seed", CASES[:2])
def test_forward_backward_graph_gives_log_z_and_marginals(scheme, labels, seed, temperature):
    crf = random_crf(scheme, labels, seed)
    emissions, lengths, mask = ragged_batch(seed, 9, 17, crf.num_tags)
    alpha, beta_emit, log_z = session(crf, probabilities=True).run(
        None,
        {"emissions": emissions, "lengths": lengths, "temperature": numpy.array(temperature)},
    )
    tempered = LinearChainCRF(crf.num_tags, crf.constraints)
    with torch.no_grad():
        for mine, theirs in zip(tempered.parameters(), crf.parameters(), strict=True):
            mine.copy_(theirs / temperature)
    em = torch.from_numpy(emissions) / temperature
    expected_log_z = tempered.log_partition(em, torch.from_numpy(mask), algorithm="sequential")
    numpy.testing.assert_allclose(
        log_z, expected_log_z.double().detach().numpy(), rtol=1e-6, atol=1e-5
    )
    marginals = numpy.exp(alpha + beta_emit - em.double().numpy() - log_z[:, None, None])
    marginals = numpy.where(mask[..., None], marginals, 0.0)
    expected = tempered.marginals(em, torch.from_numpy(mask), algorithm="sequential")
    numpy.testing.assert_allclose(marginals, expected.double().detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_graphs_at_newer_opsets(opset):
    """Reduce* ops take their axes as an input from opset 18: both forms are written."""
    crf = random_crf("BIO", ["A", "B"], 4)
    emissions, lengths, mask = ragged_batch(4, 5, 8, crf.num_tags)
    paths, _ = session(crf, opset=opset).run(None, {"emissions": emissions, "lengths": lengths})
    expected, _ = crf.decode(torch.from_numpy(emissions), torch.from_numpy(mask))
    numpy.testing.assert_array_equal(paths, expected.numpy())
    inputs = {"emissions": emissions, "lengths": lengths, "temperature": numpy.array(1.0)}
    log_z = session(crf, True, opset).run(["log_z"], inputs)[0]
    expected_z = crf.log_partition(torch.from_numpy(emissions), torch.from_numpy(mask))
    numpy.testing.assert_allclose(log_z, expected_z.double().detach().numpy(), rtol=1e-6)
