"""Where a shorter patience would have stopped a run, read off the run's own dev curve.

``spacy train`` runs are identical up to the step where a shorter patience stops them, so
one run with a long patience tells both: the step at which ``patience`` steps had passed
without a better dev score, and the best dev score up to then. Reads the
``<output>.train.jsonl`` records that ``benchmarks/accuracy.py`` writes.

    python benchmarks/patience_stop.py --patience 1600 /tmp/c23/*/crf_ner-seed*.train.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench_logger import read_records


def patience_stop(records: list[dict], patience: int) -> tuple[int, int, float] | None:
    """(stop step, best step, best dev score) under ``patience``; None if it never stops."""
    best, best_step = float("-inf"), 0
    for record in records:
        if record["score"] > best:
            best, best_step = record["score"], record["step"]
        if record["step"] - best_step >= patience:
            return record["step"], best_step, best
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="accuracy.py's .train.jsonl files")
    parser.add_argument("--patience", type=int, default=1600)
    args = parser.parse_args()
    missing = [str(path) for path in args.logs if not path.is_file()]
    if missing:
        sys.exit(f"no such training log: {', '.join(missing)}")
    print("| run | steps | best step | best dev F | stop / best step / best dev F at patience |")
    print("|---|---|---|---|---|")
    for path in args.logs:
        records = read_records(path)
        if not records:
            sys.exit(f"no evaluation records in {path}")
        best = max(records, key=lambda r: r["score"])
        stop = patience_stop(records, args.patience)
        shorter = "does not stop" if stop is None else (
            f"{stop[0]} / {stop[1]} / {100 * stop[2]:.2f}"
        )  # fmt: skip
        print(
            f"| {path} | {records[-1]['step']} | {best['step']} | {100 * best['score']:.2f} "
            f"| {shorter} |"
        )


if __name__ == "__main__":
    main()
