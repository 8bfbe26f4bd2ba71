"""The README's quick start: the project.yml workflow end to end, on a copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The dev-set F1 that the sample must reach after the test's few training steps (0.78 when
# this was written): a model that predicts nothing, or garbage, does not.
F1_FLOOR = 0.6


@pytest.mark.slow
def test_project_workflow_all(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project)
    shutil.copytree(ROOT / "configs", project / "configs")
    shutil.copytree(ROOT / "assets", project / "assets")
    # A short run: the config's 250 warm-up steps at a tiny rate would be all of it.
    config = project / "configs" / "bilstm_crf.cfg"
    text = config.read_text(encoding="utf8")
    assert "warmup_steps = 250\n" in text
    config.write_text(text.replace("warmup_steps = 250\n", "warmup_steps = 10\n"), "utf8")
    env = dict(os.environ, NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", "all", str(project),
         "--vars.max_steps", "150", "--vars.eval_frequency", "50"],
        capture_output=True, text=True, env=env, cwd=project, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (project / "corpus" / "train" / "train.iob.spacy").exists()
    assert (project / "corpus" / "dev" / "dev.iob.spacy").exists()
    assert (project / "training" / "model-best" / "crf_ner" / "model").exists()
    scores = json.loads((project / "metrics" / "scores.json").read_text())
    f1 = scores["spacy"]["micro"]["f1"]
    assert f1 >= F1_FLOOR, f"dev F1 {f1:.3f} < {F1_FLOOR}"
    assert scores["seqeval"]["micro"]["f1"] == pytest.approx(f1)
    for png in ("f1_per_type.png", "confusion.png"):
        assert (project / "metrics" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The demo step loads the pipeline with spacy.load and prints a table of entities: its
    # header and at least one row (text, label, character offsets, probability).
    demo = result.stdout[result.stdout.rindex("predict training/model-best") :]
    assert re.search(r"entity\s+label\s+chars\s+probability", demo), demo
    rows = re.findall(r"^(.+?)\s+(PER|LOC|ORG|MISC)\s+(\d+)-(\d+)\s+([01]\.\d{3})\s*$", demo, re.M)
    assert rows, demo
    demo_text = "Maria Lopez flew from Madrid to Toronto to meet engineers at Northwind Labs."
    for entity, _, start, end, _ in rows:
        assert demo_text[int(start) : int(end)] == entity.strip()
    # A fresh process that never imports spacy_crf_ner loads it, with entity probabilities,
    # and finds what the demo found, with the same probabilities.
    code = (
        "import json, spacy, sys\n"
        "cfg = {'components': {'crf_ner': {'entity_probs': True}}}\n"
        "nlp = spacy.load(sys.argv[1], config=cfg)\n"
        f"doc = nlp({demo_text!r})\n"
        "assert 'spacy_crf_ner.pipe' in sys.modules\n"
        "print(json.dumps([(e.text, e.label_, e._.crf_prob) for e in doc.ents]))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(project / "training" / "model-best")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    ents = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert ents, "no entities in the fresh process"
    assert all(label in ("PER", "LOC", "ORG", "MISC") and 0 < p <= 1 for _, label, p in ents)
    assert [(text, label, f"{p:.3f}") for text, label, p in ents] == [
        (entity.strip(), label, prob) for entity, label, _, _, prob in rows
    ]
