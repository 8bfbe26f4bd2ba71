"""``spacy train`` with the shipped configs, then ``spacy.load`` in a fresh interpreter.

Marked slow (about a minute together) but meant to run in CI: it is the check that the
entry points, the configs and the serialization work together as a user meets them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

EN_DATA = [
    ("Who is Shaka Khan?", [(7, 17, "PERSON")]),
    ("I like London and Berlin.", [(7, 13, "LOC"), (18, 24, "LOC")]),
    ("Apple bought a small startup in Paris.", [(0, 5, "ORG"), (32, 37, "LOC")]),
    ("Angela Merkel visited New York City.", [(0, 13, "PERSON"), (22, 35, "LOC")]),
    ("The weather was nice.", []),
]

ZH_DATA = [
    ("我住在北京。", [(3, 5, "GPE")]),
    ("马云创办了阿里巴巴。", [(0, 2, "PERSON"), (5, 9, "ORG")]),
    ("今天天气很好。", []),
    ("他明天去上海和北京。", [(4, 6, "GPE"), (7, 9, "GPE")]),
]

# Runs in a fresh interpreter: nothing of spacy_crf_ner is imported by hand, spaCy must find
# the factory and architectures through the package's entry points.
LOAD_AND_PREDICT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
assert "spacy_crf_ner.pipe" in sys.modules  # loaded by spaCy, through the entry points
docs = list(nlp.pipe(json.loads(sys.argv[2])))
print(json.dumps({
    "pipeline": nlp.pipe_names,
    "labels": list(nlp.get_pipe("crf_ner").labels),
    "ents": [[[ent.text, ent.label_] for ent in doc.ents] for doc in docs],
}))
"""


def make_corpus(lang: str, data: list, path: Path) -> None:
    nlp = spacy.blank(lang)
    docbin = DocBin()
    for text, entities in data:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(start, end, label=label) for start, end, label in entities]
        docbin.add(doc)
    docbin.to_disk(path)


# One torch thread: on small, busy CI machines (2 cores shared with other jobs) torch's
# OpenMP threads oversubscribe the cores and an LSTM step can get 30x slower.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_and_load(config: str, lang: str, data: list, tmp_path: Path) -> dict:
    make_corpus(lang, data, tmp_path / "train.spacy")
    output = tmp_path / "output"
    train = subprocess.run(
        [
            sys.executable, "-m", "spacy", "train", str(CONFIGS / config),
            "--paths.train", str(tmp_path / "train.spacy"),
            "--paths.dev", str(tmp_path / "train.spacy"),
            "--training.max_steps", "30",
            "--training.eval_frequency", "10",
            "--output", str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout + train.stderr
    model = output / "model-last"
    assert (model / "crf_ner" / "model").exists()
    texts = [text for text, _ in data]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(model), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=tmp_path,  # not the repository: the package must come from the environment
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_english_config(tmp_path):
    out = train_and_load("bilstm_crf.cfg", "en", EN_DATA, tmp_path)
    assert out["pipeline"] == ["crf_ner"]
    assert out["labels"] == ["LOC", "ORG", "PERSON"]
    assert len(out["ents"]) == len(EN_DATA)
    for doc_ents in out["ents"]:
        assert all(label in out["labels"] for _, label in doc_ents)


@pytest.mark.slow
def test_train_chinese_config(tmp_path):
    out = train_and_load("bilstm_crf_zh.cfg", "zh", ZH_DATA, tmp_path)
    assert out["pipeline"] == ["crf_ner"]
    assert out["labels"] == ["GPE", "ORG", "PERSON"]
    assert len(out["ents"]) == len(ZH_DATA)
    for doc_ents in out["ents"]:
        assert all(label in out["labels"] for _, label in doc_ents)
