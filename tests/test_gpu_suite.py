"""``benchmarks/gpu_suite.sh --dry-run`` runs on the CPU, so the GPU suite cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_suite_dry_run_prints_one_table():
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=480,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("| check | setting | result |") :].splitlines()
    checks = [line.split("|")[1].strip() for line in table[2:] if line.startswith("|")]
    assert checks.count("pytest -m gpu") == 1
    assert checks.count("crf_speed") == 2
    assert checks.count("transformer-CRF") == 2  # sequential and parallel
    assert checks.count("spacy train") == 1
    assert "FAILED" not in proc.stdout and "SKIPPED" not in proc.stdout
    assert "words/s" in table[-1]


def test_gpu_suite_refuses_to_run_without_a_gpu_unless_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "--dry-run" in proc.stderr
