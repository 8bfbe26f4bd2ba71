"""The README's quick start: the project.yml workflow end to end, on a copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_project_workflow_all(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project)
    shutil.copytree(ROOT / "configs", project / "configs")
    shutil.copytree(ROOT / "assets", project / "assets")
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", "all", str(project),
         "--vars.max_steps", "60", "--vars.eval_frequency", "30"],
        capture_output=True, text=True, env=env, cwd=project, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (project / "corpus" / "train" / "train.iob.spacy").exists()
    assert (project / "corpus" / "dev" / "dev.iob.spacy").exists()
    assert (project / "training" / "model-best" / "crf_ner" / "model").exists()
    scores = json.loads((project / "metrics" / "scores.json").read_text())
    assert scores["seqeval"]["micro"]["f1"] == pytest.approx(scores["spacy"]["micro"]["f1"])
    for png in ("f1_per_type.png", "confusion.png"):
        assert (project / "metrics" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The demo step loads the pipeline with spacy.load and prints a table of entities.
    assert "entity" in result.stdout and "label" in result.stdout
    # A fresh process that never imports spacy_crf_ner loads it, with entity probabilities.
    code = (
        "import spacy, sys\n"
        "cfg = {'components': {'crf_ner': {'entity_probs': True}}}\n"
        "nlp = spacy.load(sys.argv[1], config=cfg)\n"
        "doc = nlp('Maria Lopez flew from Madrid to Toronto to meet Northwind Labs.')\n"
        "assert 'spacy_crf_ner.pipe' in sys.modules\n"
        "print([(e.text, e.label_, round(e._.crf_prob, 3)) for e in doc.ents])\n"
        "assert all(0 <= e._.crf_prob <= 1 for e in doc.ents)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(project / "training" / "model-best")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
