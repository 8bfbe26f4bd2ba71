"""``spacy train`` with the shipped configs, then ``spacy.load`` in a fresh interpreter.

Marked slow (about a minute together) but meant to run in CI: it is the check that the
entry points, the configs and the serialization work together as a user meets them.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import DocBin

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

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


# A few steps at a higher rate and without the configs' warm-up (250 steps), so that the
# shipped model sizes fit the sentences in seconds: F1 = 1.0 on them after 10-20 steps.
TRAINING = [
    "--training.max_steps", "20",
    "--training.eval_frequency", "10",
    "--training.optimizer.learn_rate.warmup_steps", "1",
    "--training.optimizer.learn_rate.initial_rate", "0.01",
]  # fmt: skip


def train_and_load(config: str, lang: str, data: list, tmp_path: Path) -> dict:
    make_corpus(lang, data, tmp_path / "train.spacy")
    output = tmp_path / "output"
    train = subprocess.run(
        [
            sys.executable, "-m", "spacy", "train", str(CONFIGS / config),
            "--paths.train", str(tmp_path / "train.spacy"),
            "--paths.dev", str(tmp_path / "train.spacy"),
            *TRAINING,
            "--output", str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
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
        cwd=tmp_path,  # not the repository: the package must come from the environment
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # The F1 of the model in memory at the last step, on the training data (the dev set).
    out["trained_f1"] = srsly.read_json(model / "meta.json")["performance"]["ents_f"]
    return out


def gold_entities(data: list) -> list[list[list[str]]]:
    """[[entity text, label], ...] per text, as LOAD_AND_PREDICT prints them."""
    return [[[text[start:end], label] for start, end, label in ents] for text, ents in data]


@pytest.mark.slow
def test_train_english_config(tmp_path, en_train_data):
    out = train_and_load("bilstm_crf.cfg", "en", en_train_data, tmp_path)
    assert out["pipeline"] == ["crf_ner"]
    assert out["labels"] == ["LOC", "ORG", "PERSON"]
    assert out["ents"] == gold_entities(en_train_data)
    assert out["trained_f1"] == 1.0


@pytest.mark.slow
def test_train_chinese_config(tmp_path, zh_train_data):
    """One token per character: the gold entities of at least 3 of the 4 sentences (all 4,
    F1 = 1.0, when this was written)."""
    out = train_and_load("bilstm_crf_zh.cfg", "zh", zh_train_data, tmp_path)
    assert out["pipeline"] == ["crf_ner"]
    assert out["labels"] == ["LOC", "PER"]
    gold = gold_entities(zh_train_data)
    assert sum(map(len, gold)) == 5
    assert sum(p == g for p, g in zip(out["ents"], gold, strict=True)) >= 3
    assert out["trained_f1"] >= 0.8
