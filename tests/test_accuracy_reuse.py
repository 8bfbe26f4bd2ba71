"""``benchmarks/accuracy.py --reuse``: a finished run with the same settings is kept, a run that
was cut off or trained with another config, seed or overrides is trained again (so
``--seeds 2 --reuse`` adds seed 1 to a directory holding seed 0, and nothing stale is kept)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def accuracy(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = importlib.import_module("accuracy")
    trained: list[list[str]] = []

    def fake_spacy_train(cmd, env):
        """Stands in for ``spacy train``: a model-best and one JSONL evaluation record."""
        cmd = [str(c) for c in cmd]
        output = Path(cmd[cmd.index("--output") + 1])
        (output / "model-best").mkdir(parents=True, exist_ok=True)
        record = {"step": 200, "epoch": 1, "words": 10, "seconds": 1.5, "score": 0.5}
        Path(env["BENCH_LOG"]).write_text(json.dumps(record) + "\n")
        trained.append(cmd)

    monkeypatch.setattr(module, "run", fake_spacy_train)
    yield module, trained
    sys.modules.pop("accuracy", None)


def _train(module, tmp_path, config, seed=0, overrides=(), reuse=True):
    return module.train_to_early_stop(
        config, tmp_path, ("train", "dev", "test"), tmp_path / f"crf_ner-seed{seed}",
        seed, 1, 0, list(overrides), reuse,
    )  # fmt: skip


def test_reuse_keeps_a_finished_run_with_the_same_settings(accuracy, tmp_path):
    module, trained = accuracy
    config = tmp_path / "a.cfg"
    config.write_text("[training]\n")
    records, _ = _train(module, tmp_path, config)
    assert len(trained) == 1 and records[0]["step"] == 200
    assert (tmp_path / "crf_ner-seed0.run.json").exists()
    records, seconds = _train(module, tmp_path, config)
    assert len(trained) == 1  # kept
    assert records[0]["step"] == 200
    assert seconds == json.loads((tmp_path / "crf_ner-seed0.run.json").read_text())["seconds"]
    _train(module, tmp_path, config, seed=1)  # another seed is a new run
    assert len(trained) == 2


def test_reuse_trains_again_after_a_change_or_a_cut_off_run(accuracy, tmp_path):
    module, trained = accuracy
    config = tmp_path / "a.cfg"
    config.write_text("[training]\n")
    _train(module, tmp_path, config)
    _train(module, tmp_path, config, overrides=["training.dropout=0.2"])
    assert len(trained) == 2
    config.write_text("[training]\ndropout = 0.3\n")
    _train(module, tmp_path, config, overrides=["training.dropout=0.2"])
    assert len(trained) == 3
    (tmp_path / "crf_ner-seed0.run.json").unlink()  # as if spacy train had been killed
    _train(module, tmp_path, config, overrides=["training.dropout=0.2"])
    assert len(trained) == 4
    _train(module, tmp_path, config, overrides=["training.dropout=0.2"], reuse=False)
    assert len(trained) == 5
