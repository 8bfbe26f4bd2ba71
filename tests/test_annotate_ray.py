"""``annotate --engine ray`` on a local Ray runtime (2 CPUs, loopback only): the same bytes
as the local engine (JSONL and DocBin), nothing lost or duplicated when an actor is killed
mid-task, a rerun that redoes only missing shards, and a run Ray cannot finish reported as one
error line. Skipped where Ray Data is not installed (the ``distributed`` extra)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# A Ray runtime starts and stops, five datasets run (~90-130 s): not in the quick set.
pytestmark = pytest.mark.slow

import spacy_crf_ner.annotate as annotate_module  # noqa: E402
from spacy_crf_ner.annotate import Settings, annotate  # noqa: E402

N_DOCS = 400
SHARD_SIZE = 25


@pytest.fixture(scope="module")
def ray_runtime() -> Any:
    """One local Ray runtime for the module: 2 CPUs, bound to 127.0.0.1, shut down after."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def setup(overfit: Any, en_train_data: list, tmp_path_factory: pytest.TempPathFactory) -> dict:
    nlp, _ = overfit
    root = tmp_path_factory.mktemp("annotate_ray")
    nlp.to_disk(root / "model")
    base = [t for t, _ in en_train_data] + ["Maria from IBM went to Tokyo on Monday."]
    lines = [json.dumps({"id": f"d{i}", "text": base[i % len(base)]}) for i in range(N_DOCS)]
    lines.insert(17, "{broken")  # a bad record: errors.jsonl, in both engines
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf8")
    local = {}
    for fmt in ("jsonl", "spacy"):
        local[fmt] = root / f"local-{fmt}"
        settings = Settings(shard_size=SHARD_SIZE, entity_probs=True, progress=False, fmt=fmt)
        annotate(root / "model", [root / "docs.jsonl"], local[fmt], settings)
    return {"root": root, "model": root / "model", "input": root / "docs.jsonl",
            "local": local["jsonl"], "local_spacy": local["spacy"]}  # fmt: skip


def shard_bytes(out: Path) -> dict[str, bytes]:
    names = sorted(p.name for p in out.glob("shard-*")) + ["errors.jsonl"]
    return {name: (out / name).read_bytes() for name in names}


def ray_settings(fmt: str = "jsonl") -> Settings:
    return Settings(
        engine="ray", workers=2, shard_size=SHARD_SIZE, entity_probs=True, progress=False, fmt=fmt
    )


@pytest.mark.parametrize("fmt", ["jsonl", "spacy"])
def test_ray_writes_the_same_bytes_as_local(
    ray_runtime: Any, setup: dict, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "ray"
    summary = annotate(setup["model"], [setup["input"]], out, ray_settings(fmt))
    assert summary.docs == N_DOCS and summary.errors == 1
    local = setup["local" if fmt == "jsonl" else "local_spacy"]
    assert sorted(p.name for p in out.glob("shard-*")) == sorted(
        p.name for p in local.glob("shard-*")
    )
    assert shard_bytes(out) == shard_bytes(local)
    assert ray.is_initialized()  # a runtime it did not start is left running
    phases = summary.phases  # the benchmark's split of fixed and per-document costs
    assert phases["engine_start"] < 1.0  # the runtime was already up: nothing started
    assert phases["steady_docs"] == N_DOCS - (SHARD_SIZE - 1)  # shard 0 has the bad record
    assert phases["first_shard"] > 0 and phases["steady"] > 0
    assert phases["workers_used"] in (1, 2)


def test_actor_killed_mid_task_loses_and_duplicates_nothing(
    ray_runtime: Any, setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An actor is SIGKILLed while it holds a block: Ray restarts it and retries the task.
    The kill is done by the actor itself, in the first batch of the run (an exclusive-create
    marker file makes it exactly one), so it always lands mid-task: killing from outside at
    a moment chosen by polling could miss a run that was already over."""
    marker = tmp_path / "killed"

    class KilledOnce(annotate_module.RayAnnotator):
        def __call__(self, batch: dict[str, Any]) -> Any:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().__call__(batch)
            os.kill(os.getpid(), signal.SIGKILL)

    # A class defined here is pickled by value: the actors need not import this module.
    monkeypatch.setattr(annotate_module, "RayAnnotator", KilledOnce)
    out = tmp_path / "ray"
    summary = annotate(setup["model"], [setup["input"]], out, ray_settings())
    assert marker.exists(), "no actor was killed"
    assert summary.docs == N_DOCS and summary.errors == 1
    assert shard_bytes(out) == shard_bytes(setup["local"])
    ids = [
        json.loads(line)["id"]
        for shard in sorted(out.glob("shard-*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    assert ids == [f"d{i}" for i in range(N_DOCS)]


def test_a_run_ray_cannot_finish_is_one_error_line_and_keeps_nothing_partial(
    ray_runtime: Any, setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails every time (not a lost actor: nothing to retry) stops the run with
    one ✘ line saying how to resume; no partial shard is left behind."""
    from typer.testing import CliRunner

    from spacy_crf_ner.cli import app

    class AlwaysFails(annotate_module.RayAnnotator):
        def __call__(self, batch: dict[str, Any]) -> Any:
            raise RuntimeError("this batch cannot be annotated")

    monkeypatch.setattr(annotate_module, "RayAnnotator", AlwaysFails)
    out = tmp_path / "ray"
    args = ["annotate", setup["model"], setup["input"], "--output", out, "--engine", "ray",
            "--workers", "2", "--shard-size", SHARD_SIZE, "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("✘")]
    assert len(errors) == 1 and "rerun the same command to resume" in errors[0], result.output
    assert not list(out.glob("shard-*")) and not list(out.glob(".shard-*"))
    assert json.loads((out / "manifest.json").read_text())["done"] == {}


def test_ray_rerun_redoes_only_missing_shards(
    ray_runtime: Any, setup: dict, tmp_path: Path
) -> None:
    """A run whose shards 1, 5 and 6 are missing (lost files: the manifest's other shards
    stand) is completed by the Ray engine: the three are rewritten, byte-identical to the
    local engine's, and the others are not touched."""
    import shutil

    out = tmp_path / "resume"
    shutil.copytree(setup["local"], out)
    for shard in (1, 5, 6):
        (out / f"shard-{shard:05d}.jsonl").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    summary = annotate(setup["model"], [setup["input"]], out, ray_settings())
    assert summary.shards_skipped == len(kept)
    assert summary.docs_this_run == 3 * SHARD_SIZE  # the bad record is in shard 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if p.name in kept} == kept
    assert shard_bytes(out) == shard_bytes(setup["local"])
