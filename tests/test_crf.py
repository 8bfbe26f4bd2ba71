"""The CRF engine against brute-force enumeration, pytorch-crf and autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_crf_ner import crf
from spacy_crf_ner.crf import CRFConstraints, LinearChainCRF
from spacy_crf_ner.tags import SCHEME_NAMES, get_scheme

CASES = [(seed, constrained) for seed in range(12) for constrained in (False, True)]


@pytest.mark.parametrize("seed,constrained", CASES)
def test_against_brute_force(random_case, enumerate_paths, seed, constrained):
    batch, length, num_tags = 4, 1 + seed % 5, 2 + seed % 4
    emissions, mask, params, constraints = random_case(seed, batch, length, num_tags, constrained)
    log_z = crf.log_partition(emissions, mask, *params, constraints)
    paths, best = crf.viterbi(emissions, mask, *params, constraints)
    k = 4
    top_paths, top_scores = crf.nbest(emissions, mask, *params, k, constraints)
    probs = crf.marginals(emissions, mask, *params, constraints)
    for b, n in enumerate(mask.sum(1).tolist()):
        if n == 0:
            assert log_z[b] == 0
            assert (paths[b] == -1).all() and best[b] == 0
            assert (probs[b] == 0).all()
            continue
        scores = enumerate_paths(emissions[b], n, params, constraints)
        values = torch.stack(list(scores.values()))
        total = torch.logsumexp(values, 0)
        torch.testing.assert_close(log_z[b], total)
        ranked = sorted(scores, key=lambda p: -scores[p])
        assert tuple(paths[b, :n].tolist()) == ranked[0]
        assert (paths[b, n:] == -1).all()
        torch.testing.assert_close(best[b], scores[ranked[0]])
        for rank in range(k):
            if rank < len(ranked):
                assert tuple(top_paths[b, rank, :n].tolist()) == ranked[rank]
                torch.testing.assert_close(top_scores[b, rank], scores[ranked[rank]])
            else:
                assert top_scores[b, rank] == float("-inf")
                assert (top_paths[b, rank] == -1).all()
        for t in range(n):
            for j in range(num_tags):
                expected = sum(
                    (torch.exp(v - total) for p, v in scores.items() if p[t] == j),
                    torch.tensor(0.0, dtype=torch.float64),
                )
                torch.testing.assert_close(probs[b, t, j], expected)
        torch.testing.assert_close(probs[b, :n].sum(-1), torch.ones(n, dtype=torch.float64))


@pytest.mark.parametrize("seed,constrained", CASES[:8])
def test_gold_score_and_nll_against_brute_force(random_case, enumerate_paths, seed, constrained):
    emissions, mask, params, constraints = random_case(seed, 3, 4, 3, constrained)
    paths, _ = crf.viterbi(emissions, mask, *params, constraints)
    tags = paths.clamp(min=0)  # the best path is allowed by construction
    gold = crf.gold_score(emissions, tags, mask, *params, constraints)
    losses = crf.nll(emissions, mask, *params, tags=tags, constraints=constraints, reduction="none")
    for b, n in enumerate(mask.sum(1).tolist()):
        if n == 0:
            assert gold[b] == 0 and losses[b] == 0
            continue
        scores = enumerate_paths(emissions[b], n, params, constraints)
        path = tuple(tags[b, :n].tolist())
        torch.testing.assert_close(gold[b], scores[path])
        expected = torch.logsumexp(torch.stack(list(scores.values())), 0) - scores[path]
        torch.testing.assert_close(losses[b], expected)


@pytest.mark.parametrize("seed,constrained", CASES[:8])
def test_softmax_margin_against_brute_force(random_case, enumerate_paths, seed, constrained):
    """With a cost, the loss is log sum_y exp(score(y) + cost(y)) - score(gold), each path's
    cost the sum of its tags' costs; the gold tags cost 0."""
    emissions, mask, params, constraints = random_case(seed, 3, 4, 3, constrained)
    paths, _ = crf.viterbi(emissions, mask, *params, constraints)
    tags = paths.clamp(min=0)
    cost = torch.rand(emissions.shape, generator=torch.Generator().manual_seed(seed)) * 2
    cost = cost.to(emissions.dtype).scatter(-1, tags.unsqueeze(-1), 0.0)
    losses = crf.nll(emissions, mask, *params, tags=tags, constraints=constraints,
                     reduction="none", cost=cost)  # fmt: skip
    plain = crf.nll(emissions, mask, *params, tags=tags, constraints=constraints, reduction="none")
    for b, n in enumerate(mask.sum(1).tolist()):
        if n == 0:
            assert losses[b] == 0
            continue
        scores = enumerate_paths(emissions[b], n, params, constraints)
        augmented = [v + sum(cost[b, t, p[t]] for t in range(n)) for p, v in scores.items()]
        path = tuple(tags[b, :n].tolist())
        expected = torch.logsumexp(torch.stack(augmented), 0) - scores[path]
        torch.testing.assert_close(losses[b], expected)
        assert losses[b] > plain[b]  # every other path costs more than 0
    with pytest.raises(ValueError, match="cost must have the emissions' shape"):
        crf.nll(emissions, mask, *params, tags=tags, cost=cost[:, :1])


def test_forbidden_gold_path_has_infinite_loss():
    constraints = CRFConstraints(
        torch.tensor([[True, False], [True, True]]),
        torch.ones(2, dtype=bool),
        torch.ones(2, dtype=bool),
    )
    model = LinearChainCRF(2, constraints)
    emissions = torch.randn(1, 3, 2)
    assert model.score(emissions, torch.tensor([[0, 1, 1]])) == float("-inf")
    assert model.nll(emissions, torch.tensor([[0, 1, 1]])) == float("inf")
    assert torch.isfinite(model.nll(emissions, torch.tensor([[1, 0, 0]])))


def test_reductions(random_case):
    emissions, mask, params, _ = random_case(3, 5, 6, 4, False)
    tags = torch.randint(0, 4, (5, 6))
    none = crf.nll(emissions, mask, *params, tags=tags, reduction="none")
    assert none.shape == (5,)
    assert torch.all(none >= -1e-9)
    torch.testing.assert_close(crf.nll(emissions, mask, *params, tags=tags), none.sum())
    torch.testing.assert_close(
        crf.nll(emissions, mask, *params, tags=tags, reduction="mean"), none.mean()
    )
    torch.testing.assert_close(
        crf.nll(emissions, mask, *params, tags=tags, reduction="token_mean"),
        none.sum() / mask.sum(),
    )
    with pytest.raises(ValueError, match="reduction"):
        crf.nll(emissions, mask, *params, tags=tags, reduction="avg")


def test_gradcheck_float64(random_case):
    emissions, mask, params, constraints = random_case(7, 3, 5, 4, True)
    tags, _ = crf.viterbi(emissions, mask, *params, constraints)
    tags = tags.clamp(min=0)
    inputs = [emissions.requires_grad_(True)] + [p.requires_grad_(True) for p in params]
    for cons in (None, constraints):
        assert torch.autograd.gradcheck(
            lambda e, a, s, z, c=cons: crf.log_partition(e, mask, a, s, z, c), inputs
        )
        assert torch.autograd.gradcheck(
            lambda e, a, s, z, c=cons: crf.nll(
                e, mask, a, s, z, tags=tags, constraints=c, reduction="none"
            ),
            inputs,
        )


def test_gradcheck_partial_labels(random_case):
    emissions, mask, params, _ = random_case(11, 3, 5, 3, False)
    gen = torch.Generator().manual_seed(0)
    allowed = torch.rand(3, 5, 3, generator=gen) > 0.5
    allowed[..., 0] = True
    inputs = [emissions.requires_grad_(True)] + [p.requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(
        lambda e, a, s, z: crf.nll(e, mask, a, s, z, allowed=allowed, reduction="none"), inputs
    )


def test_gradient_of_log_partition_is_marginals(random_case):
    emissions, mask, params, constraints = random_case(5, 4, 6, 5, True)
    emissions.requires_grad_(True)
    crf.log_partition(emissions, mask, *params, constraints).sum().backward()
    torch.testing.assert_close(emissions.grad, crf.marginals(emissions, mask, *params, constraints))


def test_partial_labels(random_case):
    emissions, mask, params, constraints = random_case(2, 4, 6, 4, True)
    everything = torch.ones(4, 6, 4, dtype=torch.bool)
    loss = crf.nll(emissions, mask, *params, allowed=everything, constraints=constraints)
    torch.testing.assert_close(loss, torch.tensor(0.0, dtype=torch.float64))
    tags, _ = crf.viterbi(emissions, mask, *params, constraints)
    tags = tags.clamp(min=0)
    one_hot = torch.nn.functional.one_hot(tags, 4).bool()
    one_hot |= ~mask.unsqueeze(-1)  # padding may be anything
    for reduction in ("none", "sum"):
        torch.testing.assert_close(
            crf.nll(
                emissions,
                mask,
                *params,
                allowed=one_hot,
                constraints=constraints,
                reduction=reduction,
            ),
            crf.nll(
                emissions, mask, *params, tags=tags, constraints=constraints, reduction=reduction
            ),
        )
    # Mixed: unlabelled positions make the loss no larger than labelling them.
    partial = one_hot.clone()
    partial[:, 2] = True
    assert torch.all(
        crf.nll(emissions, mask, *params, allowed=partial, reduction="none")
        <= crf.nll(emissions, mask, *params, allowed=one_hot, reduction="none") + 1e-9
    )
    bad = one_hot.clone()
    bad[1, 0] = False
    with pytest.raises(ValueError, match="no tag is allowed at sequence 1, position 0"):
        crf.nll(emissions, mask, *params, allowed=bad)


def test_agrees_with_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    gen = torch.Generator().manual_seed(0)
    for batch, length, num_tags in [(6, 9, 5), (16, 30, 9), (3, 1, 4)]:
        ours = LinearChainCRF(num_tags)
        theirs = torchcrf.CRF(num_tags, batch_first=True)
        with torch.no_grad():
            theirs.transitions.copy_(ours.transitions)
            theirs.start_transitions.copy_(ours.start_transitions)
            theirs.end_transitions.copy_(ours.end_transitions)
        emissions = torch.randn(batch, length, num_tags, generator=gen) * 3
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        lengths[0] = length
        mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
        tags = torch.randint(0, num_tags, (batch, length), generator=gen)
        ours_ll = -ours.nll(emissions, tags, mask, reduction="none")
        theirs_ll = theirs(emissions, tags, mask, reduction="none")
        torch.testing.assert_close(ours_ll, theirs_ll, atol=1e-4, rtol=1e-4)
        paths, _ = ours.decode(emissions, mask)
        for b, best in enumerate(theirs.decode(emissions, mask)):
            assert paths[b, : len(best)].tolist() == best
        # Gradients of the parameters agree too.
        ours.zero_grad()
        theirs.zero_grad()
        ours.nll(emissions, tags, mask).backward()
        (-theirs(emissions, tags, mask)).backward()
        for mine, other in [
            (ours.transitions, theirs.transitions),
            (ours.start_transitions, theirs.start_transitions),
            (ours.end_transitions, theirs.end_transitions),
        ]:
            expected = torch.zeros_like(mine) if other.grad is None else other.grad  # T == 1
            torch.testing.assert_close(mine.grad, expected, atol=1e-4, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    scheme_name=st.sampled_from(SCHEME_NAMES),
    n_labels=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    length=st.integers(1, 12),
    scale=st.sampled_from([0.5, 3.0, 20.0]),
)
def test_constrained_decodes_are_always_valid(scheme_name, n_labels, seed, length, scale):
    scheme = get_scheme(scheme_name)
    names = scheme.tag_names([f"L{i}" for i in range(n_labels)])
    model = LinearChainCRF(len(names), scheme.allowed_transitions(names))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    emissions = torch.randn(5, length, len(names), generator=gen) * scale
    lengths = torch.randint(1, length + 1, (5,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    paths, scores = model.decode(emissions, mask)
    top, top_scores = model.nbest(emissions, mask, k=3)
    assert torch.isfinite(scores).all()
    for b, n in enumerate(lengths.tolist()):
        candidates = [paths[b, :n]] + [
            top[b, r, :n] for r in range(3) if torch.isfinite(top_scores[b, r])
        ]
        for path in candidates:
            tags = [names[i] for i in path.tolist()]
            assert scheme.validate(tags) == [], (scheme_name, tags)
    # No probability mass on invalid sequences: marginals of impossible tags are zero.
    probs = model.marginals(emissions, mask)
    allowed_start = torch.as_tensor(scheme.allowed_transitions(names)[1])
    assert torch.all(probs[:, 0, ~allowed_start] == 0)


def test_length_zero_and_empty_batch():
    model = LinearChainCRF(3)
    emissions = torch.randn(2, 0, 3)
    mask = torch.zeros(2, 0, dtype=torch.bool)
    assert model.log_partition(emissions, mask).tolist() == [0.0, 0.0]
    paths, scores = model.decode(emissions, mask)
    assert paths.shape == (2, 0) and scores.tolist() == [0.0, 0.0]
    assert model.marginals(emissions, mask).shape == (2, 0, 3)
    empty = torch.randn(0, 4, 3)
    assert model.decode(empty, torch.zeros(0, 4, dtype=torch.bool))[0].shape == (0, 4)


@pytest.mark.slow
def test_long_sequences_with_huge_emissions_are_stable():
    names = get_scheme("BILUO").tag_names(["A", "B"])
    model = LinearChainCRF(len(names), get_scheme("BILUO").allowed_transitions(names))
    gen = torch.Generator().manual_seed(0)
    length = 10_000
    emissions = (torch.rand(2, length, len(names), generator=gen) * 2 - 1) * 1e4
    emissions.requires_grad_(True)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length // 2 :] = False
    paths, best = model.decode(emissions.detach(), mask)
    tags = paths.clamp(min=0)
    loss = model.nll(emissions, tags, mask, reduction="none")
    assert torch.isfinite(loss).all() and torch.all(loss >= 0)
    # The Viterbi path's score equals the gold score of that path (to float32 precision).
    torch.testing.assert_close(
        best.double(), model.score(emissions, tags, mask).double(), rtol=1e-6, atol=1.0
    )
    loss.sum().backward()
    assert torch.isfinite(emissions.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    probs = model.marginals(emissions.detach(), mask)
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(length), atol=1e-4, rtol=0)


def test_low_precision_emissions_are_computed_in_float32():
    model = LinearChainCRF(5)
    emissions = torch.randn(3, 7, 5)
    mask = torch.ones(3, 7, dtype=torch.bool)
    tags = torch.randint(0, 5, (3, 7))
    for dtype in (torch.bfloat16, torch.float16):
        low = emissions.to(dtype).requires_grad_(True)
        loss = model.nll(low, tags, mask)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, model.nll(low.detach().float(), tags, mask))
        loss.backward()
        assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()
        assert model.marginals(low, mask).dtype == torch.float32
        assert torch.equal(model.decode(low, mask)[0], model.decode(low.float(), mask)[0])


def test_input_errors_are_clear():
    model = LinearChainCRF(3)
    with pytest.raises(ValueError, match="emissions have 4 tags but the CRF has 3"):
        model.decode(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="not left-aligned"):
        model.decode(torch.randn(2, 3, 3), torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="tag 3 at sequence 0, position 1"):
        model.nll(torch.randn(1, 2, 3), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="constraint masks must have shapes"):
        LinearChainCRF(3, (torch.ones(2, 2), torch.ones(3), torch.ones(3)))
    with pytest.raises(ValueError, match="exactly one of"):
        model.nll(torch.randn(1, 2, 3))


def test_state_dict_round_trip_keeps_constraints(tmp_path):
    scheme = get_scheme("BIO")
    names = scheme.tag_names(["PER", "LOC"])
    model = LinearChainCRF(len(names), scheme.allowed_transitions(names))
    path = tmp_path / "crf.pt"
    torch.save(model.state_dict(), path)
    loaded = LinearChainCRF(len(names))
    loaded.load_state_dict(torch.load(path, weights_only=True))
    emissions = torch.randn(4, 9, len(names))
    assert torch.equal(model.decode(emissions)[0], loaded.decode(emissions)[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu(random_case):
    emissions, mask, params, constraints = random_case(1, 8, 20, 6, True)
    paths, scores = crf.viterbi(emissions, mask, *params, constraints)
    moved = [p.cuda() for p in params]
    cons = CRFConstraints(*(c.cuda() for c in constraints))
    gpu_paths, gpu_scores = crf.viterbi(emissions.cuda(), mask.cuda(), *moved, cons)
    assert torch.equal(paths, gpu_paths.cpu())
    torch.testing.assert_close(scores, gpu_scores.cpu())
    torch.testing.assert_close(
        crf.marginals(emissions, mask, *params, constraints),
        crf.marginals(emissions.cuda(), mask.cuda(), *moved, cons).cpu(),
    )


@pytest.mark.parametrize("seed,constrained", CASES[:10])
def test_segment_probabilities_against_brute_force(random_case, enumerate_paths, seed, constrained):
    batch, length, num_tags = 3, 5, 3
    emissions, mask, params, constraints = random_case(seed, batch, length, num_tags, constrained)
    gen = torch.Generator().manual_seed(seed)
    lengths = mask.sum(1).tolist()
    rows, begins, tag_rows, befores, afters = [], [], [], [], []
    for b, n in enumerate(lengths):
        for _ in range(6 if n else 0):
            size = int(torch.randint(1, n + 1, (1,), generator=gen))
            first = int(torch.randint(0, n - size + 1, (1,), generator=gen))
            tags = torch.randint(0, num_tags, (size,), generator=gen).tolist()
            rows.append(b)
            begins.append(first)
            tag_rows.append(tags + [-1] * (length - size))
            befores.append(torch.rand(num_tags, generator=gen) > 0.6)
            afters.append(torch.rand(num_tags, generator=gen) > 0.6)
    probs = crf.segment_probabilities(
        emissions,
        mask,
        *params,
        torch.tensor(rows),
        torch.tensor(begins),
        torch.tensor(tag_rows),
        not_before=torch.stack(befores),
        not_after=torch.stack(afters),
        constraints=constraints,
    )
    for i, b in enumerate(rows):
        n = lengths[b]
        scores = enumerate_paths(emissions[b], n, params, constraints)
        total = torch.logsumexp(torch.stack(list(scores.values())), 0)
        tags = [t for t in tag_rows[i] if t >= 0]
        first, stop = begins[i], begins[i] + len(tags) - 1
        expected = torch.tensor(0.0, dtype=torch.float64)
        for path, value in scores.items():
            if list(path[first : stop + 1]) != tags:
                continue
            if first > 0 and befores[i][path[first - 1]]:
                continue
            if stop + 1 < n and afters[i][path[stop + 1]]:
                continue
            expected = expected + torch.exp(value - total)
        torch.testing.assert_close(probs[i], expected)
        assert 0.0 <= float(probs[i]) <= 1.0 + 1e-9
