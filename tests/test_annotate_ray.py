"""``annotate --engine ray`` on a local Ray runtime (2 CPUs, loopback only): the same bytes
as the local engine, and nothing lost or duplicated when an actor is killed mid-run.
Skipped where Ray Data is not installed (the ``distributed`` extra)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# A Ray runtime starts and stops (~80 s for the module): not in the quick set.
pytestmark = pytest.mark.slow

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
    local = root / "local"
    settings = Settings(shard_size=SHARD_SIZE, entity_probs=True, progress=False)
    annotate(root / "model", [root / "docs.jsonl"], local, settings)
    return {"root": root, "model": root / "model", "input": root / "docs.jsonl", "local": local}


def shard_bytes(out: Path) -> dict[str, bytes]:
    names = sorted(p.name for p in out.glob("shard-*")) + ["errors.jsonl"]
    return {name: (out / name).read_bytes() for name in names}


def ray_settings() -> Settings:
    return Settings(
        engine="ray", workers=2, shard_size=SHARD_SIZE, entity_probs=True, progress=False
    )


def test_ray_writes_the_same_bytes_as_local(ray_runtime: Any, setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    summary = annotate(setup["model"], [setup["input"]], out, ray_settings())
    assert summary.docs == N_DOCS and summary.errors == 1
    assert shard_bytes(out) == shard_bytes(setup["local"])
    assert ray.is_initialized()  # a runtime it did not start is left running


def annotator_pids() -> list[int]:
    """PIDs of the Ray actors that run the pipeline (Linux: /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"RayAnnotator" in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds actors via /proc")
def test_actor_killed_mid_run_loses_and_duplicates_nothing(
    ray_runtime: Any, setup: dict, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["summary"] = annotate(setup["model"], [setup["input"]], out, ray_settings())
        except BaseException as err:  # reported by the test thread
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    # Wait (for events, not a time) until an actor is alive, then SIGKILL it: Ray restarts it
    # and retries its task. Not "after the first shard is written": the driver writes a shard
    # only once its rows have come back, and by then the actors of a small run may be gone
    # (a race that can end the run before any kill; one unreproduced failure was seen).
    while thread.is_alive() and killed is None:
        pids = annotator_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.02)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert killed is not None, "the run ended before an actor could be killed"
    assert result["summary"].docs == N_DOCS
    assert shard_bytes(out) == shard_bytes(setup["local"])
    ids = [
        json.loads(line)["id"]
        for shard in sorted(out.glob("shard-*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    assert ids == [f"d{i}" for i in range(N_DOCS)]
