"""Test-session settings, shared data and shared fixtures of every test module.

Everything a test module needs from another one lives here, as fixtures: test modules never
import each other (or any helper module), so the suite runs from any folder, with
``--import-mode=importlib``, in random order (pytest-randomly) and test by test.

* ``en_train_data`` / ``zh_train_data``: the small English and Chinese training sets.
* ``small_model``: a small BiLSTM ``CRFTagger.v1`` config, for tests that train their own.
* ``learns_and_round_trips``: checks that a pipeline fits its examples and predicts the same
  after ``to_disk`` and ``spacy.load``.
* ``overfit``: a small crf_ner overfitted on ``en_train_data`` (session-wide, read-only:
  a test that switches a setting on restores it in a ``finally``).
* ``over_confident_gold``: gold docs on which ``overfit`` is over-confident (calibration).
* ``tiny_bert``: a tiny random BERT written to a temporary folder, for offline transformer
  tests.
* ``random_case`` / ``enumerate_paths``: small random CRF problems (ragged masks, random
  constraints) and the brute-force reference over every tag path, for the CRF tests.

Hypothesis profiles: ``ci`` (derandomised, no example database: the same examples on
every run) is used when ``CI`` is set, as CI services and ``.ci/run`` do; ``dev`` (random
examples, failing ones kept in the repository's git-ignored ``.hypothesis/`` wherever pytest
is run from) otherwise. ``HYPOTHESIS_PROFILE=ci`` (or ``dev``) chooses one explicitly.
"""

from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path

# Small models run fastest on one thread, and two torch/OpenMP jobs with two threads each on
# a 2-core machine can be 30x slower (oversubscription). Set, not defaulted: subprocesses
# (spacy train, the CLI) inherit it, and must not inherit a user's OMP_NUM_THREADS=16.
os.environ["OMP_NUM_THREADS"] = "1"
# Tests never download anything: transformers and the hub must stay offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent
# Hypothesis keeps its files in the repository's (git-ignored) .hypothesis/, not in the folder
# pytest is run from.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(ROOT / ".hypothesis"))

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

# In-process torch: the same reason as OMP_NUM_THREADS. Set once for the whole session; no
# test changes it (so there is nothing to restore).
torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile(
    "dev", database=DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples"))
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


# --------------------------------------------------------------------------------------------
# Shared training data and model configs

EN_TRAIN = [
    ("Who is Shaka Khan?", [(7, 17, "PERSON")]),
    ("I like London and Berlin.", [(7, 13, "LOC"), (18, 24, "LOC")]),
    ("Apple bought a small startup in Paris.", [(0, 5, "ORG"), (32, 37, "LOC")]),
    ("Angela Merkel visited New York City last May.", [(0, 13, "PERSON"), (22, 35, "LOC")]),
    ("The weather was nice.", []),
]

# Character offsets; with the "char" segmenter every character is a token. The last
# sentence has characters that the tiny BERT's vocabulary lacks ("猫", "咪"): [UNK].
ZH_TRAIN = [
    ("我在北京工作", [(2, 4, "LOC")]),
    ("张三去上海了", [(0, 2, "PER"), (3, 5, "LOC")]),
    ("李四是中国人", [(0, 2, "PER"), (3, 5, "LOC")]),
    ("天气很好猫咪", []),
]

# A small model, so that the tests that train their own run fast.
SMALL_MODEL = {
    "@architectures": "spacy_crf_ner.CRFTagger.v1",
    "tok2vec": {
        "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
        "width": 32,
        "embed_size": 500,
        "char_features": 8,
        "lstm_width": 32,
    },
}


@pytest.fixture(scope="session")
def en_train_data() -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Five English sentences with character-offset entities (PERSON, LOC, ORG), one
    without entities. Shared by the session: read it, don't change it."""
    return copy.deepcopy(EN_TRAIN)


@pytest.fixture(scope="session")
def zh_train_data() -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Four Chinese sentences with character-offset entities (PER, LOC), one without.
    Shared by the session: read it, don't change it."""
    return copy.deepcopy(ZH_TRAIN)


@pytest.fixture
def small_model() -> dict:
    """The config of a small BiLSTM CRF tagger (a fresh copy: tests may change it)."""
    return copy.deepcopy(SMALL_MODEL)


@pytest.fixture
def learns_and_round_trips(tmp_path):
    """``check(nlp, examples, optimizer, updates=40)``: after ``updates`` updates ``nlp`` finds
    exactly the gold entities of ``examples``; saved and loaded, it finds them again and its
    crf_ner model gives the same scores to the last bit."""
    import numpy
    import spacy

    def entities(docs):
        return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]

    def check(nlp, examples, optimizer, updates: int = 40) -> None:
        for _ in range(updates):
            nlp.update(examples, sgd=optimizer)
        gold = entities(eg.reference for eg in examples)
        texts = [eg.reference.text for eg in examples]
        assert entities(nlp.pipe(texts)) == gold
        nlp.to_disk(tmp_path / "pipeline")
        loaded = spacy.load(tmp_path / "pipeline")
        assert entities(loaded.pipe(texts)) == gold
        docs = [nlp.make_doc(t) for t in texts]
        ours, theirs = (p.get_pipe("crf_ner").model.predict(docs) for p in (nlp, loaded))
        for a, b in zip(ours, theirs, strict=True):
            numpy.testing.assert_array_equal(a, b)

    return check


@pytest.fixture(scope="session")
def overfit():
    """A small crf_ner overfitted on the English training data (80 updates): it predicts
    the gold entities of all five sentences. Shared by the whole session: tests that change
    a setting of the component restore it."""
    from spacy.lang.en import English
    from spacy.training import Example
    from spacy.util import fix_random_seed

    fix_random_seed(0)
    nlp = English()
    nlp.add_pipe("crf_ner", config={"model": copy.deepcopy(SMALL_MODEL)})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in EN_TRAIN]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(80):
        nlp.update(examples, sgd=optimizer)
    return nlp, examples


@pytest.fixture(scope="session")
def over_confident_gold(overfit) -> list:
    """Gold docs on which ``overfit`` is over-confident: its training docs (predicted right)
    and copies whose entities are all relabelled MISC (predicted wrong with the same high
    confidence). For calibration tests; read-only."""
    from spacy.tokens import Span

    _, examples = overfit
    gold = [eg.reference for eg in examples]
    relabelled = []
    for doc in gold:
        copy_ = doc.copy()
        copy_.set_ents([Span(copy_, e.start, e.end, label="MISC") for e in doc.ents])
        relabelled.append(copy_)
    return gold + relabelled


# --------------------------------------------------------------------------------------------
# A tiny random BERT, so that transformer tests run offline

# The vocabulary holds the word pieces of the test sentences (whole words and a few ``##``
# pieces, so that some words split), and a few CJK characters; characters that are missing
# (other CJK characters, emoji) become ``[UNK]``. The weights are random: the tests train the
# pipeline, they do not rely on pretrained knowledge.
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Lowercased whole words of the English test sentences; the tokenizer lowercases.
BERT_WORDS = """
who is shaka khan ? i like london and berlin . apple bought a small startup in paris
angela merkel visited new york city last may the weather was nice , she works for google
mr smith went to tokyo on monday with maria from ibm
""".split()
# Word pieces, so that some words become several pieces ("berlin" is also whole).
BERT_PIECES = ["ber", "##lin", "lon", "##don", "sha", "##ka", "mer", "##kel", "##s", "##ing"]
# A few CJK characters of the Chinese test sentences; the others map to [UNK].
BERT_CJK = list("我在北京工作他去上海了张三李四是中国人天气很好")
BERT_VOCAB = list(
    dict.fromkeys(
        [
            *BERT_SPECIAL_TOKENS,
            *BERT_WORDS,
            *BERT_PIECES,
            *BERT_CJK,
            *"abcdefghijklmnopqrstuvwxyz",
            *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
        ]
    )
)


def write_tiny_bert(path: Path, *, num_hidden_layers: int = 2, seed: int = 0) -> Path:
    """Write a random BERT (hidden size 32, 2 heads) and its fast tokenizer to ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf8")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(BERT_VOCAB),
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(str(path))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random 2-layer BERT in a temporary folder (skips without transformers)."""
    pytest.importorskip("transformers")
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "model")


# --------------------------------------------------------------------------------------------
# Brute-force references for the CRF


def _random_crf_case(seed: int, batch: int, length: int, tags: int, constrained: bool, scale=2.0):
    """A small random CRF problem: float64 emissions, parameters, a ragged left-aligned
    mask and constraints."""
    import torch

    from spacy_crf_ner.crf import CRFConstraints

    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, length, tags, generator=gen, dtype=torch.float64) * scale
    params = [
        torch.randn(tags, tags, generator=gen, dtype=torch.float64),
        torch.randn(tags, generator=gen, dtype=torch.float64),
        torch.randn(tags, generator=gen, dtype=torch.float64),
    ]
    lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    constraints = None
    if constrained:
        # Random constraints that keep tag 0 always reachable, so some path always exists.
        trans = torch.rand(tags, tags, generator=gen) > 0.4
        trans[0, :] = True
        trans[:, 0] = True
        start = (torch.rand(tags, generator=gen) > 0.4) | (torch.arange(tags) == 0)
        end = (torch.rand(tags, generator=gen) > 0.4) | (torch.arange(tags) == 0)
        constraints = CRFConstraints(trans, start, end)
    return emissions, mask, params, constraints


def _enumerate_crf_paths(emissions, length, params, constraints, allowed=None):
    """Every allowed path of one sequence (``allowed (T, K)``: partial labels) with its score."""
    trans, start, end = params
    num_tags = emissions.shape[-1]
    scores = {}
    for path in itertools.product(range(num_tags), repeat=length):
        if constraints is not None:
            ok = bool(constraints.start[path[0]]) and bool(constraints.end[path[-1]])
            ok = ok and all(
                bool(constraints.transitions[a, b]) for a, b in itertools.pairwise(path)
            )
            if not ok:
                continue
        if allowed is not None and not all(bool(allowed[t, j]) for t, j in enumerate(path)):
            continue
        score = start[path[0]] + end[path[-1]] + emissions[0, path[0]]
        for t in range(1, length):
            score = score + trans[path[t - 1], path[t]] + emissions[t, path[t]]
        scores[path] = score
    return scores


@pytest.fixture(scope="session")
def random_case():
    """``random_case(seed, batch, length, tags, constrained, scale=2.0)`` ->
    ``(emissions, mask, params, constraints)``."""
    return _random_crf_case


@pytest.fixture(scope="session")
def enumerate_paths():
    """``enumerate_paths(emissions, length, params, constraints, allowed=None)`` ->
    ``{path: score}`` over every allowed path of one sequence."""
    return _enumerate_crf_paths
