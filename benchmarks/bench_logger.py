"""A ``spacy train`` logger for the benchmarks: spaCy's console table plus a JSONL record of
steps, words seen and wall-clock seconds at each evaluation (for training words/second).

Loaded with ``spacy train ... --code benchmarks/bench_logger.py``; the output file is taken from
the ``BENCH_LOG`` environment variable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from spacy.training.loggers import console_logger_v3
from spacy.util import registry


def read_records(path: Path) -> list[dict]:
    """The records the logger wrote to ``path``, one per evaluation, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@registry.loggers("spacy_crf_ner.bench_logger.v1")
def bench_logger():
    console = console_logger_v3(progress_bar=None, console_output=True, output_file=None)

    def setup(nlp, stdout=sys.stdout, stderr=sys.stderr):
        log_step, finalize = console(nlp, stdout, stderr)
        path = os.environ.get("BENCH_LOG")
        stream = open(path, "a", encoding="utf-8") if path else None
        begin = time.perf_counter()

        def step(info):
            log_step(info)
            if info is not None and stream is not None:
                record = {
                    "step": info["step"],
                    "epoch": info["epoch"],
                    "words": info["words"],
                    "seconds": time.perf_counter() - begin,
                    "score": info["score"],
                    "other_scores": {
                        k: v for k, v in info["other_scores"].items() if not isinstance(v, dict)
                    },
                }
                stream.write(json.dumps(record) + "\n")
                stream.flush()

        def close():
            finalize()
            if stream is not None:
                stream.close()

        return step, close

    return setup
