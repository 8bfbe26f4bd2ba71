"""The CRF's three algorithms ("sequential", "parallel", "auto") against brute-force
enumeration and against each other; the parallel scan's host-sync freedom on the meta device.

GPU tests are marked ``gpu`` and skipped without CUDA (``benchmarks/gpu_suite.sh`` runs them).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spacy_crf_ner import crf
from spacy_crf_ner.crf import CRFConstraints, LinearChainCRF
from spacy_crf_ner.tags import get_scheme

ALGORITHMS = ("sequential", "parallel", "auto")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


CASES = [(seed, constrained) for seed in range(10) for constrained in (False, True)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("seed,constrained", CASES)
def test_against_brute_force(random_case, enumerate_paths, algorithm, seed, constrained):
    batch, length, num_tags = 4, 1 + seed % 6, 2 + seed % 3
    emissions, mask, params, constraints = random_case(seed, batch, length, num_tags, constrained)
    log_z = crf.log_partition(emissions, mask, *params, constraints, algorithm=algorithm)
    paths, best = crf.viterbi(emissions, mask, *params, constraints, algorithm=algorithm)
    probs = crf.marginals(emissions, mask, *params, constraints, algorithm=algorithm)
    tags = paths.clamp(min=0)
    losses = crf.nll(
        emissions,
        mask,
        *params,
        tags=tags,
        constraints=constraints,
        reduction="none",
        algorithm=algorithm,
    )
    for b, n in enumerate(mask.sum(1).tolist()):
        if n == 0:
            assert log_z[b] == 0 and best[b] == 0 and losses[b] == 0
            assert (paths[b] == -1).all() and (probs[b] == 0).all()
            continue
        scores = enumerate_paths(emissions[b], n, params, constraints)
        total = torch.logsumexp(torch.stack(list(scores.values())), 0)
        torch.testing.assert_close(log_z[b], total)
        top = max(scores, key=lambda p: scores[p])
        assert tuple(paths[b, :n].tolist()) == top
        assert (paths[b, n:] == -1).all()
        torch.testing.assert_close(best[b], scores[top])
        torch.testing.assert_close(losses[b], total - scores[top])
        for t in range(n):
            for j in range(num_tags):
                expected = sum(
                    (torch.exp(v - total) for p, v in scores.items() if p[t] == j),
                    torch.tensor(0.0, dtype=torch.float64),
                )
                torch.testing.assert_close(probs[b, t, j], expected)
        assert (probs[b, n:] == 0).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("seed,constrained", CASES[:8])
def test_partial_labels_against_brute_force(
    random_case, enumerate_paths, algorithm, seed, constrained
):
    batch, length, num_tags = 3, 4, 3
    emissions, mask, params, constraints = random_case(seed, batch, length, num_tags, constrained)
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.rand(batch, length, num_tags, generator=gen) > 0.5
    allowed[..., 0] = True  # tag 0 is always reachable under the random constraints
    losses = crf.nll(
        emissions,
        mask,
        *params,
        allowed=allowed,
        constraints=constraints,
        reduction="none",
        algorithm=algorithm,
    )
    for b, n in enumerate(mask.sum(1).tolist()):
        if n == 0:
            assert losses[b] == 0
            continue
        every = torch.stack(list(enumerate_paths(emissions[b], n, params, constraints).values()))
        kept = enumerate_paths(emissions[b], n, params, constraints, allowed[b])
        expected = torch.logsumexp(every, 0) - torch.logsumexp(torch.stack(list(kept.values())), 0)
        torch.testing.assert_close(losses[b], expected)


@pytest.mark.parametrize("seed,constrained", CASES[:6])
def test_segment_probabilities_agree_with_brute_force(
    random_case, enumerate_paths, seed, constrained
):
    emissions, mask, params, constraints = random_case(seed, 3, 5, 3, constrained)
    lengths = mask.sum(1)
    # Every segment of one or two tags at every position of sequence 0.
    spans = [
        (0, i, seg)
        for i in range(5)
        for r in (1, 2)
        for seg in itertools.product(range(3), repeat=r)
    ]
    spans = [(b, i, seg) for b, i, seg in spans if i + len(seg) <= int(lengths[b])]
    batch_index = torch.tensor([b for b, _, _ in spans])
    begin = torch.tensor([i for _, i, _ in spans])
    tags = torch.tensor([list(seg) + [-1] * (2 - len(seg)) for _, _, seg in spans])
    scores = enumerate_paths(emissions[0], int(lengths[0]), params, constraints)
    total = torch.logsumexp(torch.stack(list(scores.values())), 0)
    for algorithm in ALGORITHMS:
        probs = crf.segment_probabilities(
            emissions,
            mask,
            *params,
            batch_index,
            begin,
            tags,
            constraints=constraints,
            algorithm=algorithm,
        )
        for n, (_, i, seg) in enumerate(spans):
            expected = sum(
                (torch.exp(v - total) for p, v in scores.items() if p[i : i + len(seg)] == seg),
                torch.tensor(0.0, dtype=torch.float64),
            )
            torch.testing.assert_close(probs[n], expected)


@pytest.mark.parametrize(
    "seed,batch,length,num_tags",
    [
        (0, 6, 37, 5),
        pytest.param(1, 4, 512, 9, marks=pytest.mark.slow),
        pytest.param(2, 3, 2048, 5, marks=pytest.mark.slow),
        pytest.param(3, 5, 1000, 17, marks=pytest.mark.slow),
    ],
)
def test_parallel_agrees_with_sequential_on_long_ragged_batches(
    random_case, seed, batch, length, num_tags
):
    emissions, mask, params, constraints = random_case(seed, batch, length, num_tags, True)
    emissions, params = emissions.float(), [p.float() for p in params]
    results = {}
    for algorithm in ("sequential", "parallel"):
        leaves = [emissions.clone().requires_grad_(True)] + [
            p.clone().requires_grad_(True) for p in params
        ]
        log_z = crf.log_partition(leaves[0], mask, *leaves[1:], constraints, algorithm=algorithm)
        log_z.sum().backward()
        paths, best = crf.viterbi(emissions, mask, *params, constraints, algorithm=algorithm)
        probs = crf.marginals(emissions, mask, *params, constraints, algorithm=algorithm)
        results[algorithm] = (log_z, paths, best, probs, [x.grad for x in leaves])
    seq, par = results["sequential"], results["parallel"]
    torch.testing.assert_close(par[0], seq[0], rtol=1e-4, atol=1e-4)
    # Paths are compared where the best path is unique by a margin float32 cannot blur.
    _, top2 = crf.nbest(emissions.double(), mask, *[p.double() for p in params], 2, constraints)
    unique = (top2[:, 0] - top2[:, 1]) > 1e-3
    assert unique.any()
    assert torch.equal(par[1][unique], seq[1][unique])
    torch.testing.assert_close(par[2], seq[2], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(par[3], seq[3], rtol=1e-4, atol=1e-4)
    for mine, other in zip(par[4], seq[4], strict=True):
        torch.testing.assert_close(mine, other, rtol=1e-4, atol=1e-4)


def test_gradients_of_parallel_pass_gradcheck(random_case):
    emissions, mask, params, constraints = random_case(7, 3, 6, 4, True)
    tags = crf.viterbi(emissions, mask, *params, constraints)[0].clamp(min=0)
    inputs = [emissions.requires_grad_(True)] + [p.requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(
        lambda e, a, s, z: crf.nll(
            e,
            mask,
            a,
            s,
            z,
            tags=tags,
            constraints=constraints,
            reduction="none",
            algorithm="parallel",
        ),
        inputs,
    )


def test_parallel_viterbi_breaks_ties_into_a_valid_best_path():
    # All scores zero: every allowed path is best; the result must still be one allowed path.
    scheme = get_scheme("BIO")
    names = scheme.tag_names(["A", "B"])
    cons = CRFConstraints(*(torch.as_tensor(m) for m in scheme.allowed_transitions(names)))
    k = len(names)
    zeros = [torch.zeros(k, k), torch.zeros(k), torch.zeros(k)]
    emissions = torch.zeros(3, 33, k)
    mask = torch.arange(33).unsqueeze(0) < torch.tensor([[33], [20], [1]])
    paths, best = crf.viterbi(emissions, mask, *zeros, cons, algorithm="parallel")
    assert torch.equal(best, torch.zeros(3))
    for b, n in enumerate(mask.sum(1).tolist()):
        assert scheme.validate([names[i] for i in paths[b, :n].tolist()]) == []
        assert (paths[b, n:] == -1).all()


@pytest.mark.slow
def test_parallel_is_stable_on_long_sequences_with_huge_emissions():
    names = get_scheme("BILUO").tag_names(["A", "B"])
    model = LinearChainCRF(len(names), get_scheme("BILUO").allowed_transitions(names))
    gen = torch.Generator().manual_seed(0)
    length = 10_000
    emissions = (torch.rand(2, length, len(names), generator=gen) * 2 - 1) * 1e4
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length // 2 :] = False
    paths, best = model.decode(emissions, mask, algorithm="parallel")
    seq_paths, seq_best = model.decode(emissions, mask, algorithm="sequential")
    assert torch.equal(paths, seq_paths)
    tags = paths.clamp(min=0)
    torch.testing.assert_close(
        best.double(), model.score(emissions, tags, mask).double(), rtol=1e-6, atol=1.0
    )
    leaf = emissions.clone().requires_grad_(True)
    loss = model.nll(leaf, tags, mask, reduction="none", algorithm="parallel")
    seq_loss = model.nll(emissions, tags, mask, reduction="none", algorithm="sequential")
    assert torch.isfinite(loss).all()
    # log Z ~ 5e7 here; in float32, entries ~1e4 below a matrix's max keep ~1e-3 of their
    # digits, so the loss (log Z minus the gold score, both ~5e7) is right to ~0.1, 2e-9 of
    # log Z (the sequential scans switch to float64 for such inputs, after a host sync).
    torch.testing.assert_close(loss, seq_loss, rtol=0, atol=0.1)
    loss.sum().backward()
    assert torch.isfinite(leaf.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    probs = model.marginals(emissions, mask, algorithm="parallel")
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(length), atol=1e-4, rtol=0)
    seq_probs = model.marginals(emissions, mask, algorithm="sequential")
    torch.testing.assert_close(probs, seq_probs, atol=1e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_parallel_low_precision_emissions_are_computed_in_float32(dtype):
    model = LinearChainCRF(5)
    gen = torch.Generator().manual_seed(0)
    emissions = torch.randn(3, 40, 5, generator=gen).to(dtype)
    mask = torch.arange(40).unsqueeze(0) < torch.tensor([[40], [17], [3]])
    tags = torch.randint(0, 5, (3, 40), generator=gen)
    low = emissions.clone().requires_grad_(True)
    loss = model.nll(low, tags, mask, algorithm="parallel")
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss, model.nll(emissions.float(), tags, mask, algorithm="sequential")
    )
    loss.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()
    probs = model.marginals(emissions, mask, algorithm="parallel")
    assert probs.dtype == torch.float32
    torch.testing.assert_close(
        probs, model.marginals(emissions.float(), mask, algorithm="sequential")
    )
    assert torch.equal(
        model.decode(emissions, mask, algorithm="parallel")[0],
        model.decode(emissions.float(), mask, algorithm="sequential")[0],
    )


@pytest.mark.parametrize("algorithm", ["sequential", "parallel"])
def test_autocast_does_not_lower_the_crf_precision(algorithm):
    # CPU autocast lowers matmuls to bf16 as CUDA autocast does: the CRF must not follow.
    model = LinearChainCRF(9)
    gen = torch.Generator().manual_seed(0)
    emissions = torch.randn(4, 100, 9, generator=gen) * 3
    mask = torch.arange(100).unsqueeze(0) < torch.tensor([[100], [60], [7], [1]])
    tags = torch.randint(0, 9, (4, 100), generator=gen)
    kwargs = {"algorithm": algorithm}
    expected = [
        model.nll(emissions, tags, mask, **kwargs),
        model.marginals(emissions, mask, **kwargs),
        model.decode(emissions, mask, **kwargs)[0],
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [
            model.nll(emissions, tags, mask, **kwargs),
            model.marginals(emissions, mask, **kwargs),
            model.decode(emissions, mask, **kwargs)[0],
        ]
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-6)
    assert torch.equal(got[2], expected[2])


def test_parallel_has_no_host_sync():
    """On the meta device no value exists: any host sync (``.item()``, ``nonzero``, a Python
    branch on a tensor) raises. The sequential log Z syncs once (its step choice) and does."""
    batch, length, num_tags = 3, 50, 5
    meta = {"device": "meta"}
    emissions = torch.empty(batch, length, num_tags, requires_grad=True, **meta)
    mask = torch.ones(batch, length, dtype=torch.bool, **meta)
    params = [
        torch.empty(s, requires_grad=True, **meta)
        for s in ((num_tags, num_tags), (num_tags,), (num_tags,))
    ]
    cons = CRFConstraints(*(torch.ones(p.shape, dtype=torch.bool, **meta) for p in params))
    tags = torch.zeros(batch, length, dtype=torch.long, **meta)
    allowed = torch.ones(batch, length, num_tags, dtype=torch.bool, **meta)
    par = {"constraints": cons, "algorithm": "parallel"}
    crf.nll(emissions, mask, *params, tags=tags, **par).backward()
    crf.nll(emissions, mask, *params, allowed=allowed, **par).backward()
    assert emissions.grad.shape == emissions.shape
    with torch.no_grad():
        assert crf.marginals(emissions, mask, *params, cons, algorithm="parallel").shape == (
            emissions.shape
        )
        assert crf.viterbi(emissions, mask, *params, cons, algorithm="parallel")[0].shape == (
            batch,
            length,
        )
        crf.SpanPosteriors(emissions, mask, *params, cons, algorithm="parallel")
    with pytest.raises(RuntimeError, match="meta"):
        crf.log_partition(emissions, mask, *params, cons, algorithm="sequential")


class _KernelCounter(TorchDispatchMode):
    """Non-view aten ops dispatched while active: the kernels a GPU would launch."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def _kernels(random_case, algorithm: str, task: str, length: int) -> int:
    emissions, mask, params, _ = random_case(0, 2, length, 3, False)
    emissions, params = emissions.float(), [p.float() for p in params]
    counter = _KernelCounter()
    with counter:
        if task == "nll":
            emissions.requires_grad_(True)
            tags = torch.zeros(mask.shape, dtype=torch.long)
            crf.nll(emissions, mask, *params, tags=tags, algorithm=algorithm).backward()
        elif task == "marginals":
            crf.marginals(emissions, mask, *params, algorithm=algorithm)
        else:
            crf.viterbi(emissions, mask, *params, algorithm=algorithm)
    return counter.kernels


@pytest.mark.parametrize("task", ["nll", "marginals", "viterbi"])
def test_parallel_op_count_grows_with_log_length(random_case, task):
    # 64x the length: the sequential scans launch ~64x the kernels, the parallel scan < 3x.
    sequential = _kernels(random_case, "sequential", task, 2048) / _kernels(
        random_case, "sequential", task, 32
    )
    parallel = _kernels(random_case, "parallel", task, 2048) / _kernels(
        random_case, "parallel", task, 32
    )
    assert sequential > 20
    assert parallel <= 3


def test_auto_choice_and_errors():
    cpu = torch.zeros(2, 4096, 3)
    assert crf.choose_algorithm("auto", cpu) == "sequential"
    assert crf.choose_algorithm("parallel", cpu) == "parallel"
    with pytest.raises(ValueError, match="algorithm must be one of"):
        crf.log_partition(
            cpu, None, torch.zeros(3, 3), torch.zeros(3), torch.zeros(3), algorithm="scan"
        )
    model = LinearChainCRF(3)
    empty = torch.randn(2, 0, 3)
    for algorithm in ALGORITHMS:
        assert model.log_partition(empty, algorithm=algorithm).tolist() == [0.0, 0.0]
        assert model.decode(empty, algorithm=algorithm)[0].shape == (2, 0)
        assert model.marginals(empty, algorithm=algorithm).shape == (2, 0, 3)


@pytest.mark.gpu
@needs_gpu
def test_gpu_parallel_matches_sequential_and_cpu(random_case):
    emissions, mask, params, constraints = random_case(4, 16, 300, 9, True)
    emissions, params = emissions.float(), [p.float() for p in params]
    cuda = [emissions.cuda(), mask.cuda(), *(p.cuda() for p in params)]
    cons = CRFConstraints(*(c.cuda() for c in constraints))
    assert crf.choose_algorithm("auto", cuda[0]) == "parallel"
    cpu_z = crf.log_partition(emissions, mask, *params, constraints, algorithm="sequential")
    cpu_paths = crf.viterbi(emissions, mask, *params, constraints, algorithm="sequential")[0]
    cpu_probs = crf.marginals(emissions, mask, *params, constraints, algorithm="sequential")
    for algorithm in ("sequential", "parallel"):
        z = crf.log_partition(*cuda, cons, algorithm=algorithm)
        torch.testing.assert_close(z.cpu(), cpu_z, rtol=1e-4, atol=1e-4)
        paths = crf.viterbi(*cuda, cons, algorithm=algorithm)[0]
        assert (paths.cpu() == cpu_paths).float().mean() > 0.99  # ties aside
        probs = crf.marginals(*cuda, cons, algorithm=algorithm)
        torch.testing.assert_close(probs.cpu(), cpu_probs, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_gpu
def test_gpu_bf16_autocast_training_step():
    model = LinearChainCRF(9).cuda()
    linear = torch.nn.Linear(32, 9).cuda()
    features = torch.randn(8, 256, 32, device="cuda")
    tags = torch.randint(0, 9, (8, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        emissions = linear(features)
        assert emissions.dtype == torch.bfloat16
        losses = {a: model.nll(emissions, tags, algorithm=a) for a in ("sequential", "parallel")}
    assert losses["parallel"].dtype == torch.float32
    torch.testing.assert_close(losses["parallel"], losses["sequential"], rtol=1e-4, atol=1e-2)
    losses["parallel"].backward()
    assert torch.isfinite(linear.weight.grad).all()


# --------------------------------------------------------------------------------------------
# The batch object (crf_batch.CRFBatch)


def _crf_layer_case(seed: int = 0, num_tags: int = 4):
    import numpy

    from spacy_crf_ner.crf_batch import make_segments
    from spacy_crf_ner.layers import CRFLayer

    rng = numpy.random.RandomState(seed)
    layer = CRFLayer(nO=num_tags)
    layer.initialize()
    layer.set_param("transitions", rng.normal(size=(num_tags, num_tags)).astype("float32"))
    layer.set_param("start", rng.normal(size=(num_tags,)).astype("float32"))
    layer.set_param("end", rng.normal(size=(num_tags,)).astype("float32"))
    lengths = [3, 5, 1, 4]
    flat = (rng.normal(size=(sum(lengths), num_tags)) * 2).astype("float32")
    starts = numpy.cumsum([0, *lengths])[:-1]
    return layer, flat, make_segments(starts, lengths), lengths


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_crf_batch_against_brute_force(enumerate_paths, algorithm):
    from spacy_crf_ner.crf_batch import CRFBatch

    layer, flat, segments, lengths = _crf_layer_case()
    params = [torch.as_tensor(layer.get_param(n)).double() for n in ("transitions", "start", "end")]
    temperature = 1.7
    batch = CRFBatch(layer, flat, segments, temperature=temperature, algorithm=algorithm)
    paths = batch.viterbi()
    path_log_prob = batch.path_log_prob()
    probs = batch.marginals()
    top, top_probs = batch.nbest(3)
    start = 0
    for row, n in enumerate(lengths):
        emissions = torch.as_tensor(flat[start : start + n]).double()
        start += n
        scores = enumerate_paths(emissions, n, params, None)
        ranked = sorted(scores, key=lambda p: -scores[p])
        assert tuple(paths[row, :n].tolist()) == ranked[0]
        tempered_scores = {p: v / temperature for p, v in scores.items()}
        log_z = torch.logsumexp(torch.stack(list(tempered_scores.values())), 0)
        expected = tempered_scores[ranked[0]] - log_z  # float32 emissions: float32 tolerance
        assert float(path_log_prob[row]) == pytest.approx(float(expected), abs=1e-5)
        for rank in range(3):
            assert tuple(top[row, rank, :n].tolist()) == ranked[rank]
            expected = torch.exp(tempered_scores[ranked[rank]] - log_z)
            assert top_probs[row, rank] == pytest.approx(float(expected), rel=1e-4)
        for t in range(n):
            for j in range(emissions.shape[-1]):
                expected = sum(
                    torch.exp(v - log_z) for p, v in tempered_scores.items() if p[t] == j
                )
                assert float(probs[row, t, j]) == pytest.approx(float(expected), abs=1e-5)


def test_crf_batch_runs_each_scan_once(monkeypatch):
    """A scored batch: one Viterbi scan, one forward and one backward scan, whatever is asked
    (path, entity and candidate probabilities, marginals, n-best probabilities)."""
    from spacy_crf_ner.crf_batch import CandidateRequest, CRFBatch
    from spacy_crf_ner.tags import get_scheme

    calls = {"sum_product": 0, "max_plus": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(crf, "_sum_product_scan", counted("sum_product", crf._sum_product_scan))
    monkeypatch.setattr(crf, "_max_plus_scan", counted("max_plus", crf._max_plus_scan))
    scheme = get_scheme("BIO")
    names = scheme.tag_names(["X"])  # 3 tags
    layer, flat, segments, _ = _crf_layer_case(num_tags=len(names))
    batch = CRFBatch(layer, flat, segments, temperature=1.3, algorithm="sequential")
    batch.viterbi()
    batch.path_log_prob()
    batch.entity_probs(scheme, names, [(0, 0, 1, "X"), (1, 1, 3, "X")])
    batch.candidates(scheme, names, CandidateRequest(["X"], 2, 0.01))
    batch.marginals()
    assert calls == {"sum_product": 2, "max_plus": 1}
    batch.nbest(2)  # its own k-best scan, but log Z comes from the cached forward pass
    assert calls == {"sum_product": 2, "max_plus": 2}
    # Without the forward-backward pass, n-best's log Z is a forward scan only.
    CRFBatch(layer, flat, segments, algorithm="sequential").nbest(2)
    assert calls == {"sum_product": 3, "max_plus": 3}


def test_crf_batch_nll_matches_engine_and_needs_grad():
    import numpy

    from spacy_crf_ner.crf_batch import CRFBatch, pad_emissions

    layer, flat, segments, _ = _crf_layer_case()
    gold = numpy.where(segments.index >= 0, segments.index % 4, -1)
    gold[1, 2] = -1  # a missing label: partial-label loss
    loss, d_flat, grads = CRFBatch(layer, flat, segments, requires_grad=True).nll(gold)
    leaf = torch.as_tensor(flat).requires_grad_(True)
    emissions, mask = pad_emissions(leaf, segments)
    gold_t = torch.as_tensor(gold)
    allowed = (gold_t.unsqueeze(-1) == torch.arange(4)) | (gold_t < 0).unsqueeze(-1)
    params = [torch.as_tensor(layer.get_param(n)) for n in ("transitions", "start", "end")]
    expected = crf.nll(emissions, mask, *params, allowed=allowed)
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
    numpy.testing.assert_allclose(d_flat, leaf.grad.numpy(), atol=1e-5)
    assert set(grads) == {"transitions", "start", "end"}
    with pytest.raises(ValueError, match="requires_grad=True"):
        CRFBatch(layer, flat, segments).nll(gold)
