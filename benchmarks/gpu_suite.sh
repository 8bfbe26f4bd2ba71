#!/usr/bin/env bash
# The GPU suite: GPU tests, CRF speed (pytorch-crf vs sequential vs parallel), a transformer-CRF
# step under bf16 autocast, and `spacy train --gpu-id 0` on a CoNLL slice; prints one markdown
# table for BENCHMARKS.md. At most 8 minutes on one H100/H200 (a hard limit of 480 s is set).
#
#   bash benchmarks/gpu_suite.sh [--data-dir ../shared/data]   # on a GPU machine
#   bash benchmarks/gpu_suite.sh --dry-run                      # CPU, tiny sizes (CI)
#
# Run from anywhere; PYTHON defaults to the repository's .venv if it has one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
cd "$root"
exec timeout 480 "$python" benchmarks/gpu_suite.py "$@"
