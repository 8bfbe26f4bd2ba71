"""Inference words/s of several trained pipelines on one test set, side by side.

Each pipeline is loaded once; then, round after round, each annotates the test set's texts with
``nlp.pipe(texts, batch_size=256)`` on ``--threads`` torch threads, in turn, so that a change
of load on the machine falls on all of them alike. The best round of each is kept, and every
pipeline's words/s is printed with its ratio to the first one named. Used to say what a config
change costs at inference (issue 18: "a feature that costs more than 30% speed must say what it
buys").

    python benchmarks/model_speed.py --test /tmp/acc-conll/corpus/eng.testb.spacy \\
        shipped=/tmp/acc-conll/crf_ner-seed0/model-best \\
        recipe=/tmp/acc-recipe/crf_ner-seed0/model-best

Run it on an otherwise idle machine: only the ratios of one run mean something.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path


def pipeline_args(specs: list[str], script: str) -> list[tuple[str, str]]:
    """``NAME=PATH`` arguments as (name, path) pairs; exits with one line naming the problem
    when one is malformed or its path is not a pipeline directory."""
    pairs = [spec.partition("=") for spec in specs]
    if any(not sep or not name or not path for name, sep, path in pairs):
        sys.exit(f"{script}: give each pipeline as NAME=PATH")
    for _, _, path in pairs:
        if not Path(path).is_dir():
            sys.exit(f"{script}: no pipeline directory at {path}")
    return [(name, path) for name, _, path in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=Path, required=True, help="a DocBin (.spacy) file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    pairs = pipeline_args(args.models, "model_speed.py")
    if not args.test.is_file():
        sys.exit(f"model_speed.py: no test file at {args.test}")

    import spacy
    import torch
    from spacy.tokens import DocBin

    torch.set_num_threads(args.threads)
    models = {name: spacy.load(path) for name, path in pairs}
    first = next(iter(models.values()))
    docs = list(DocBin().from_disk(args.test).get_docs(first.vocab))
    texts = [doc.text for doc in docs]
    words = sum(len(doc) for doc in docs)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.2f}; {len(texts)} texts, {words} gold tokens; "
        f"{args.threads} thread(s), best of {args.rounds} rounds"
    )
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, nlp in models.items():
            begin = time.perf_counter()
            for _doc in nlp.pipe(texts, batch_size=256):
                pass
            best[name] = max(best.get(name, 0.0), words / (time.perf_counter() - begin))
    base = next(iter(best.values()))
    print("\n| pipeline | words/s | ratio |\n|---|---|---|")
    for name, speed in best.items():
        print(f"| {name} | {speed:,.0f} | {speed / base:.2f} |")


if __name__ == "__main__":
    main()
