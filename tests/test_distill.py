"""Structural knowledge distillation: the CRF-to-CRF KL against brute-force enumeration and
gradcheck, a student that learns a teacher's paths from its marginals alone, the teacher
corpus reader's cache, and crf_ner learning from it inside spaCy's training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example

from spacy_crf_ner import crf
from spacy_crf_ner.crf import CRFConstraints
from spacy_crf_ner.crf_distill import structural_kl, teacher_marginals
from spacy_crf_ner.teacher import create_teacher_corpus
from spacy_crf_ner.teacher_cache import TeacherMismatchError, teacher_signal

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# --------------------------------------------------------------------------------------------
# The loss


def random_setup(random_case, seed: int, batch: int, length: int, tags: int, constrained: bool,
                 restricted):  # fmt: skip
    """Teacher and student CRFs over the same ragged batch (the teacher's case from conftest's
    ``random_case``, the student's from another seed); with ``restricted`` random positions
    where some tags are not allowed (-inf emissions, the same for both CRFs)."""
    t_emissions, mask, t_params, constraints = random_case(seed, batch, length, tags, constrained)
    s_emissions, _, s_params, _ = random_case(seed + 1000, batch, length, tags, False)
    if restricted:
        gen = torch.Generator().manual_seed(seed + 2000)
        forbidden = torch.rand(batch, length, tags, generator=gen) > 0.6
        forbidden[..., 0] = False
        t_emissions = t_emissions.masked_fill(forbidden, -math.inf)
        s_emissions = s_emissions.masked_fill(forbidden, -math.inf)
    return (t_emissions, t_params), (s_emissions, s_params), mask, constraints


def path_log_probs(enumerate_paths, emissions, length, params, constraints) -> dict:
    """log p(y) of every allowed path of one sequence, by enumerating all K^T paths."""
    scores = {
        path: float(score)
        for path, score in enumerate_paths(emissions, length, params, constraints).items()
        if math.isfinite(float(score))
    }
    log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
    return {path: score - float(log_z) for path, score in scores.items()}


def brute_force_kl(enumerate_paths, teacher, student, mask, constraints, temperature=1.0):
    result = []
    t_em, t_params = teacher
    t_em, t_params = t_em / temperature, [p / temperature for p in t_params]
    for b, length in enumerate(mask.sum(1).tolist()):
        if length == 0:
            result.append(0.0)
            continue
        p_t = path_log_probs(enumerate_paths, t_em[b], length, t_params, constraints)
        p_s = path_log_probs(enumerate_paths, student[0][b], length, student[1], constraints)
        result.append(sum(math.exp(lp) * (lp - p_s[path]) for path, lp in p_t.items()))
    return result


def kl_of(teacher, student, mask, constraints, temperature=1.0, *, algorithm="auto"):
    marginals = teacher_marginals(
        teacher[0], mask, *teacher[1], constraints, temperature=temperature, algorithm=algorithm
    )
    return structural_kl(
        student[0], mask, *student[1], marginals, constraints, reduction="none",
        algorithm=algorithm,
    )  # fmt: skip


CASES = [
    (seed, constrained, restricted)
    for seed in range(6)
    for constrained in (False, True)
    for restricted in (False, True)
]


@pytest.mark.parametrize("seed,constrained,restricted", CASES)
def test_kl_equals_brute_force(random_case, enumerate_paths, seed, constrained, restricted):
    batch, length, tags = 4, 1 + seed % 4, 2 + seed % 3
    teacher, student, mask, constraints = random_setup(
        random_case, seed, batch, length, tags, constrained, restricted
    )
    temperature = 1.0 if seed % 2 else 2.5
    expected = brute_force_kl(enumerate_paths, teacher, student, mask, constraints, temperature)
    for algorithm in ("sequential", "parallel"):
        kl = kl_of(teacher, student, mask, constraints, temperature, algorithm=algorithm)
        assert kl.dtype == torch.float64
        assert kl.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9), algorithm


def test_kl_float32_matches_float64(random_case):
    teacher, student, mask, constraints = random_setup(random_case, 3, 6, 9, 5, True, True)
    exact = kl_of(teacher, student, mask, constraints)
    as_float = [(x[0].float(), [p.float() for p in x[1]]) for x in (teacher, student)]
    kl = kl_of(*as_float, mask, constraints)
    assert kl.dtype == torch.float32
    assert kl.double().tolist() == pytest.approx(exact.tolist(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("constrained", [False, True])
def test_kl_zero_for_same_crf_positive_otherwise(random_case, constrained):
    teacher, student, mask, constraints = random_setup(random_case, 1, 5, 6, 4, constrained, True)
    same = kl_of(teacher, teacher, mask, constraints)
    assert same.abs().max() < 1e-10
    differs = kl_of(teacher, student, mask, constraints)
    nonempty = mask.any(1)
    assert (differs[nonempty] > 1e-3).all()
    assert (differs[~nonempty] == 0).all()
    # Shifting every emission of a position by a constant leaves the distribution unchanged.
    shifted = (teacher[0] + torch.randn(5, 6, 1, dtype=torch.float64), teacher[1])
    assert kl_of(teacher, shifted, mask, constraints).abs().max() < 1e-9


def test_kl_infinite_where_student_forbids_teacher_mass(random_case):
    teacher, student, mask, _ = random_setup(random_case, 2, 2, 3, 3, False, False)
    blocked = student[0].clone()
    blocked[0, 1, 2] = -math.inf  # the teacher gives tag 2 at (0, 1) some probability
    kl = kl_of(teacher, (blocked, student[1]), mask, None)
    assert math.isinf(float(kl[0])) and kl[0] > 0
    assert math.isfinite(float(kl[1]))


@pytest.mark.parametrize("constrained", [False, True])
def test_kl_gradcheck(random_case, constrained):
    teacher, student, mask, constraints = random_setup(random_case, 4, 3, 5, 3, constrained, True)
    marginals = teacher_marginals(teacher[0], mask, *teacher[1], constraints)
    raw = torch.randn(3, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    forbidden = torch.isinf(student[0])
    inputs = [raw.requires_grad_(), *(p.clone().requires_grad_() for p in student[1])]

    def kl(emissions, trans, start, end):
        emissions = emissions.masked_fill(forbidden, -math.inf)
        return structural_kl(emissions, mask, trans, start, end, marginals, constraints)

    assert torch.autograd.gradcheck(kl, inputs, eps=1e-6, atol=1e-6)


def test_kl_gradient_is_student_minus_teacher_marginals(random_case):
    teacher, student, mask, constraints = random_setup(random_case, 5, 4, 6, 4, True, False)
    marginals = teacher_marginals(teacher[0], mask, *teacher[1], constraints)
    emissions = student[0].clone().requires_grad_()
    structural_kl(emissions, mask, *student[1], marginals, constraints).backward()
    own = crf.marginals(student[0], mask, *student[1], constraints)
    assert torch.allclose(emissions.grad, own - marginals.unary, atol=1e-10)


def test_student_learns_teacher_paths_from_marginals_alone():
    """A student CRF of the teacher's family (an emission table over a toy vocabulary and
    its own transitions), trained on the teacher's marginals only, decodes the teacher's
    Viterbi paths on sequences it never saw."""
    gen = torch.Generator().manual_seed(0)
    vocab, tags = 6, 4
    trans = torch.zeros(tags, tags, dtype=torch.bool)
    for a, b in [(0, 0), (0, 1), (1, 2), (2, 0), (2, 1), (3, 3), (3, 0), (0, 3)]:
        trans[a, b] = True
    constraints = CRFConstraints(trans, torch.tensor([1, 1, 0, 1.0]) > 0, torch.ones(4) > 0)
    table = torch.randn(vocab, tags, generator=gen) * 3
    teacher_params = [
        torch.randn(*shape, generator=gen) for shape in ((tags, tags), (tags,), (tags,))
    ]

    def batch(n, length):
        tokens = torch.randint(0, vocab, (n, length), generator=gen)
        lengths = torch.randint(1, length + 1, (n,), generator=gen)
        return tokens, torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)

    train_tokens, train_mask = batch(64, 8)
    marginals = teacher_marginals(table[train_tokens], train_mask, *teacher_params, constraints)
    student = [
        torch.zeros(vocab, tags),
        torch.zeros(tags, tags),
        torch.zeros(tags),
        torch.zeros(tags),
    ]
    for p in student:
        p.requires_grad_()
    optimizer = torch.optim.Adam(student, lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        loss = structural_kl(
            student[0][train_tokens], train_mask, *student[1:], marginals, constraints,
            reduction="mean",
        )  # fmt: skip
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.02
    test_tokens, test_mask = batch(64, 10)
    expected, _ = crf.viterbi(table[test_tokens], test_mask, *teacher_params, constraints)
    with torch.no_grad():
        paths, _ = crf.viterbi(student[0][test_tokens], test_mask, *student[1:], constraints)
    assert torch.equal(paths, expected)


# --------------------------------------------------------------------------------------------
# The teacher corpus and its cache

TEXTS = [
    "Angela Merkel visited London and Berlin.",
    "Apple bought a small startup in Paris.",
    "Who is Shaka Khan?",
    "The weather was nice.",
    "",
    "I like New York City.",
]


@pytest.fixture
def teacher_dir(overfit, tmp_path) -> Path:
    """The ``overfit`` pipeline saved as a teacher (a fresh copy per test: tests change it)."""
    nlp, _ = overfit
    path = tmp_path / "teacher"
    nlp.to_disk(path)
    return path


def write_texts(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n", encoding="utf8")
    return path


def count_builds(monkeypatch) -> list[Path]:
    """Record every run of the teacher (each builds a cache folder)."""
    from spacy_crf_ner import teacher as teacher_module

    built: list[Path] = []
    build = teacher_module.build_cache

    def counted(teacher, docs, folder, **kwargs):
        built.append(folder)
        return build(teacher, docs, folder, **kwargs)

    monkeypatch.setattr(teacher_module, "build_cache", counted)
    return built


def read_all(corpus, nlp) -> list[Example]:
    return list(corpus(nlp))


def test_cache_reused_across_epochs_and_restarts(teacher_dir, tmp_path, monkeypatch):
    built = count_builds(monkeypatch)
    texts = write_texts(tmp_path / "raw.txt", TEXTS)
    cache_dir = tmp_path / "cache"
    nlp = spacy.blank("en")
    reader = create_teacher_corpus(teacher_dir, texts, cache_dir=cache_dir, progress=False)
    first = read_all(reader, nlp)
    second = read_all(reader, nlp)  # the next epoch
    assert len(built) == 1
    assert len(first) == len(second) == len(TEXTS) - 1  # the empty line is no doc
    restarted = create_teacher_corpus(teacher_dir, texts, cache_dir=cache_dir, progress=False)
    again = read_all(restarted, spacy.blank("en"))  # a new process: same folder, not rebuilt
    assert len(built) == 1
    for a, b in zip(first, again, strict=True):
        assert numpy.array_equal(teacher_signal(a).emissions, teacher_signal(b).emissions)
    assert [p.name for p in cache_dir.iterdir()] == [built[0].name]  # no temporary left


def test_cache_invalidated_when_teacher_or_text_changes(teacher_dir, tmp_path, monkeypatch):
    built = count_builds(monkeypatch)
    texts = write_texts(tmp_path / "raw.txt", TEXTS)
    cache_dir = tmp_path / "cache"

    def run():
        reader = create_teacher_corpus(teacher_dir, texts, cache_dir=cache_dir, progress=False)
        return read_all(reader, spacy.blank("en"))

    before = run()
    # Retrained teacher: its weights change, the path stays.
    teacher = spacy.load(teacher_dir)
    crf = teacher.get_pipe("crf_ner").model.get_ref("crf")
    crf.set_param("transitions", crf.get_param("transitions") + 1.0)
    teacher.to_disk(teacher_dir)
    after = run()
    assert len(built) == 2 and built[0] != built[1]
    changed = (
        teacher_signal(after[0]).cache.transitions - teacher_signal(before[0]).cache.transitions
    )
    assert numpy.allclose(changed, 1.0)
    write_texts(texts, [*TEXTS, "Maria went to Madrid."])
    assert len(run()) == len(TEXTS)
    assert len(built) == 3


def test_cache_holds_the_teacher_crf(overfit, teacher_dir, tmp_path):
    """The cached emissions are the teacher's (to float16), and decoding them with the cached
    CRF gives the teacher's own predictions."""
    nlp, _ = overfit
    ner = nlp.get_pipe("crf_ner")
    texts = write_texts(tmp_path / "raw.txt", TEXTS)
    reader = create_teacher_corpus(teacher_dir, texts, cache_dir=tmp_path / "c", progress=False)
    examples = read_all(reader, spacy.blank("en"))
    docs = [nlp.make_doc(eg.reference.text) for eg in examples]
    predicted = ner.predict(docs)
    for doc, eg, tags in zip(docs, examples, predicted, strict=True):
        signal = teacher_signal(eg)
        cache = signal.cache
        own = ner.model.ops.to_numpy(ner.model.predict([doc])[0])
        assert numpy.allclose(signal.emissions, own, rtol=2e-3, atol=2e-3)
        constraints = CRFConstraints(*(torch.as_tensor(a) for a in cache.allowed))
        params = [torch.as_tensor(a) for a in (cache.transitions, cache.start, cache.end)]
        emissions = torch.as_tensor(signal.emissions.astype("float32")).unsqueeze(0)
        paths, _ = crf.viterbi(emissions, None, *params, constraints)
        assert paths[0].tolist() == tags.tolist()
    assert cache.tag_names == list(ner.tag_names) and cache.labels == list(ner.labels)


def test_reader_formats(teacher_dir, tmp_path):
    """.txt, .jsonl and .spacy give the same tokens; gold entities of a DocBin are kept."""
    nlp = spacy.blank("en")
    gold_docs = [nlp.make_doc(t) for t, _ in EN_GOLD]
    for doc, (_, ents) in zip(gold_docs, EN_GOLD, strict=True):
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in ents]
    DocBin(docs=gold_docs).to_disk(tmp_path / "gold.spacy")
    write_texts(tmp_path / "raw.txt", [t for t, _ in EN_GOLD])
    lines = [json.dumps({"text": t, "meta": i}) for i, (t, _) in enumerate(EN_GOLD)]
    write_texts(tmp_path / "raw.jsonl", lines)
    tokens = []
    for name in ("raw.txt", "raw.jsonl", "gold.spacy"):
        reader = create_teacher_corpus(
            teacher_dir, tmp_path / name, cache_dir=tmp_path / "cache", progress=False
        )
        examples = read_all(reader, nlp)
        tokens.append([[t.text for t in eg.predicted] for eg in examples])
        assert all(len(teacher_signal(eg).emissions) == len(eg.predicted) for eg in examples)
    assert tokens[0] == tokens[1] == tokens[2]
    assert [e.label_ for e in examples[0].reference.ents] == ["PERSON", "LOC"]
    # Text and gold together: one corpus, the teacher run once over both.
    both = create_teacher_corpus(
        teacher_dir, tmp_path / "raw.txt", tmp_path / "gold.spacy",
        cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    assert len(read_all(both, nlp)) == 2 * len(EN_GOLD)
    with pytest.raises(ValueError, match="both are null"):
        create_teacher_corpus(teacher_dir, None, None)
    with pytest.raises(ValueError, match=r"expected \.txt, \.jsonl or \.spacy"):
        read_all(create_teacher_corpus(teacher_dir, write_texts(tmp_path / "x.csv", ["a"])), nlp)


EN_GOLD = [
    ("Angela Merkel visited London.", [(0, 13, "PERSON"), (22, 28, "LOC")]),
    ("Apple is in Paris.", [(0, 5, "ORG"), (12, 17, "LOC")]),
]


# --------------------------------------------------------------------------------------------
# crf_ner learning from the teacher


def teacher_examples(teacher_dir, tmp_path, nlp, texts=TEXTS) -> list[Example]:
    reader = create_teacher_corpus(
        teacher_dir, write_texts(tmp_path / "raw.txt", texts), cache_dir=tmp_path / "cache",
        progress=False,
    )  # fmt: skip
    return read_all(reader, nlp)


def distill_loss(nlp, examples) -> float:
    ner = nlp.get_pipe("crf_ner")
    docs = [eg.predicted for eg in examples]
    loss, d_scores, grads = ner._loss(examples, ner.model.predict(docs), ner._golds(examples))
    assert len(d_scores) == len(docs) and set(grads) == {"transitions", "start", "end"}
    return loss


def test_distill_loss_zero_when_student_is_teacher(teacher_dir, tmp_path, small_model):
    student = spacy.load(teacher_dir, config={"components": {"crf_ner": {"distill_weight": 1.0}}})
    examples = teacher_examples(teacher_dir, tmp_path, student)
    # The teacher's emissions are cached in float16: a KL of that rounding is left.
    assert abs(distill_loss(student, examples)) < 1e-3 * len(examples)
    fresh = spacy.blank("en")
    fresh.add_pipe("crf_ner", config={"model": small_model, "distill_weight": 1.0})
    examples = teacher_examples(teacher_dir, tmp_path, fresh)
    fresh.initialize(lambda: examples)
    assert fresh.get_pipe("crf_ner").labels == student.get_pipe("crf_ner").labels
    assert distill_loss(fresh, examples) > 1.0


def test_hard_silver_loss_is_the_teacher_path_nll(teacher_dir, tmp_path):
    """distill_hard: the NLL of the teacher's best path, i.e. -log of its probability,
    which the teacher reports as doc._.crf_path_prob."""
    student = spacy.load(
        teacher_dir,
        config={"components": {"crf_ner": {"distill_weight": 1.0, "distill_hard": True}}},
    )
    examples = teacher_examples(teacher_dir, tmp_path, student)
    teacher = spacy.load(teacher_dir, config={"components": {"crf_ner": {"entity_probs": True}}})
    path_probs = [teacher(eg.reference.text)._.crf_path_prob for eg in examples]
    expected = -sum(math.log(p) for p in path_probs)
    assert distill_loss(student, examples) == pytest.approx(expected, rel=1e-2, abs=1e-3)


def test_distill_weight_mixes_gold_and_teacher(teacher_dir, tmp_path, small_model):
    """distill_weight w: w x KL + (1 - w) x gold NLL, each computed alone at w = 1 and 0."""
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    gold_docs = [nlp.make_doc(t) for t, _ in EN_GOLD]
    for doc, (_, ents) in zip(gold_docs, EN_GOLD, strict=True):
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in ents]
    DocBin(docs=gold_docs).to_disk(tmp_path / "gold.spacy")
    reader = create_teacher_corpus(
        teacher_dir, write_texts(tmp_path / "raw.txt", TEXTS), tmp_path / "gold.spacy",
        cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    examples = read_all(reader, nlp)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("crf_ner")
    losses = {}
    for weight in (0.0, 1.0, 0.3):
        ner.distill_weight = weight
        losses[weight] = distill_loss(nlp, examples)
    assert losses[0.0] > 0 and losses[1.0] > 0
    assert losses[0.3] == pytest.approx(0.3 * losses[1.0] + 0.7 * losses[0.0], rel=1e-5)


def test_label_mismatch_names_both_label_sets(teacher_dir, tmp_path, small_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    examples = teacher_examples(teacher_dir, tmp_path, nlp)
    with pytest.raises(TeacherMismatchError) as error:
        nlp.get_pipe("crf_ner").initialize(lambda: examples, labels=["LOC", "PERSON"])
    message = str(error.value)
    assert "['LOC', 'ORG', 'PERSON']" in message and "['LOC', 'PERSON']" in message
    scheme = spacy.blank("en")
    scheme.add_pipe("crf_ner", config={"model": small_model, "tag_scheme": "BIO"})
    with pytest.raises(TeacherMismatchError, match="BILUO scheme.*BIO scheme"):
        scheme.initialize(lambda: teacher_examples(teacher_dir, tmp_path, scheme))


def test_student_trained_on_teacher_alone_predicts_its_entities(
    overfit, teacher_dir, tmp_path, small_model
):
    """No gold at all: a fresh BiLSTM-CRF trained only on the teacher's marginals of the
    texts predicts the teacher's entities on them."""
    from spacy.util import fix_random_seed

    teacher, _ = overfit
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model, "distill_weight": 1.0})
    examples = teacher_examples(teacher_dir, tmp_path, nlp)
    assert not any(eg.reference.ents for eg in examples)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(80):
        nlp.update(examples, sgd=optimizer)
    texts = [eg.reference.text for eg in examples]
    expected = [[(e.text, e.label_) for e in doc.ents] for doc in teacher.pipe(texts)]
    assert any(expected)
    assert [[(e.text, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)] == expected


def test_transformer_teacher(tiny_bert, en_train_data, tmp_path):
    """A transformer-CRF teacher (the transformer component runs first, crf_ner listens): the
    cache decodes to the teacher's own predictions."""
    from spacy.util import fix_random_seed, load_config, load_model_from_config

    fix_random_seed(0)
    config = load_config(
        CONFIGS / "transformer_crf.cfg",
        overrides={"paths.transformer_model": str(tiny_bert.resolve())},
        interpolate=True,
    )
    teacher = load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example.from_dict(teacher.make_doc(t), {"entities": e}) for t, e in en_train_data]
    optimizer = teacher.initialize(lambda: examples)
    for _ in range(3):
        teacher.update(examples, sgd=optimizer)
    teacher.to_disk(tmp_path / "teacher")
    student = spacy.blank("en")
    cached = teacher_examples(tmp_path / "teacher", tmp_path, student)
    ner = teacher.get_pipe("crf_ner")
    docs = list(teacher.pipe([eg.reference.text for eg in cached], disable=["crf_ner"]))
    for doc, eg, tags in zip(docs, cached, ner.predict(docs), strict=True):
        signal = teacher_signal(eg)
        own = ner.model.ops.to_numpy(ner.model.predict([doc])[0])
        assert numpy.allclose(signal.emissions, own, rtol=2e-3, atol=2e-3)
        cache = signal.cache
        constraints = CRFConstraints(*(torch.as_tensor(a) for a in cache.allowed))
        params = [torch.as_tensor(a) for a in (cache.transitions, cache.start, cache.end)]
        emissions = torch.as_tensor(signal.emissions.astype("float32")).unsqueeze(0)
        assert crf.viterbi(emissions, None, *params, constraints)[0][0].tolist() == tags.tolist()


@pytest.mark.slow
def test_spacy_train_distill_config(teacher_dir, tmp_path):
    """``spacy train configs/distill_bilstm_crf.cfg`` with a teacher, raw text, gold and dev
    data; a second run (a restart) reuses the teacher cache; the student loads and predicts."""
    nlp = spacy.blank("en")
    gold = [nlp.make_doc(t) for t, _ in EN_GOLD]
    for doc, (_, ents) in zip(gold, EN_GOLD, strict=True):
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in ents]
    DocBin(docs=gold).to_disk(tmp_path / "gold.spacy")
    write_texts(tmp_path / "raw.txt", TEXTS)
    cache = tmp_path / "cache"

    def train(output: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable, "-m", "spacy", "train", str(CONFIGS / "distill_bilstm_crf.cfg"),
                "--paths.teacher", str(teacher_dir), "--paths.raw", str(tmp_path / "raw.txt"),
                "--paths.train", str(tmp_path / "gold.spacy"),
                "--paths.dev", str(tmp_path / "gold.spacy"), "--paths.teacher_cache", str(cache),
                "--training.max_steps", "6", "--training.eval_frequency", "3",
                "--corpora.train.progress", "false", "--output", str(tmp_path / output),
            ],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    first = train("out1")
    assert first.returncode == 0, first.stdout + first.stderr
    folders = list(cache.iterdir())
    assert len(folders) == 1
    stamp = (folders[0] / "emissions.npy").stat().st_mtime_ns
    second = train("out2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert list(cache.iterdir()) == folders
    assert (folders[0] / "emissions.npy").stat().st_mtime_ns == stamp
    student = spacy.load(tmp_path / "out2" / "model-last")
    assert student.get_pipe("crf_ner").labels == ("LOC", "ORG", "PERSON")
    student("Angela Merkel visited London.")
    # No teacher: one clear line.
    missing = subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(CONFIGS / "distill_bilstm_crf.cfg"),
         "--paths.raw", str(tmp_path / "raw.txt"), "--paths.dev", str(tmp_path / "gold.spacy")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "needs a teacher pipeline" in missing.stdout + missing.stderr


@pytest.mark.parametrize(
    "setting,value",
    [("distill_weight", 1.5), ("distill_weight", True), ("distill_temperature", 0.0),
     ("distill_hard", "yes")],
)  # fmt: skip
def test_bad_distill_settings_name_the_setting(setting, value, small_model):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=setting):  # spaCy's config check or the component's
        nlp.add_pipe("crf_ner", config={"model": small_model, setting: value})


def test_teacher_output_of_other_tokens_is_refused(teacher_dir, tmp_path, small_model):
    """A signal whose cached rows do not match the doc's tokens (e.g. an augmenter changed
    them) is an error naming the doc, never a silent misalignment."""
    from spacy_crf_ner.teacher_cache import TEACHER_KEY, TeacherSignal

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model, "distill_weight": 1.0})
    examples = teacher_examples(teacher_dir, tmp_path, nlp)
    nlp.initialize(lambda: examples)
    cache = teacher_signal(examples[0]).cache
    examples[0].reference.user_data[TEACHER_KEY] = TeacherSignal(cache, 2)  # a shorter doc
    with pytest.raises(ValueError, match="doc starting 'Angela Merkel visited"):
        nlp.update(examples)


def test_distill_config_is_the_bilstm_config_plus_the_teacher():
    """The distilled student and the gold-only one differ only in their training data and
    the distillation settings, so that a comparison of the two is fair."""
    from spacy.util import load_config

    plain = load_config(CONFIGS / "bilstm_crf.cfg", interpolate=False)
    distill = load_config(CONFIGS / "distill_bilstm_crf.cfg", interpolate=False)
    settings = {
        k: distill["components"]["crf_ner"].pop(k)
        for k in list(distill["components"]["crf_ner"])
        if k.startswith("distill_")
    }
    assert settings == {"distill_weight": 0.5, "distill_temperature": 1.0, "distill_hard": False}
    assert distill["corpora"]["train"]["@readers"] == "spacy_crf_ner.TeacherCorpus.v1"
    for config in (plain, distill):
        del config["paths"], config["corpora"]["train"]
    assert distill == plain
