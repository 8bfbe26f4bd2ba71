"""Inference words/second of crf_ner against spaCy's ``ner``: n_process 1 and 2, idle and
next to one competing CPU-bound process.

Both pipelines read the same texts, the sentences of CoNLL-2003's test set (eng.testb, tokens
joined by spaces), with ``nlp.pipe(texts, batch_size=256, n_process=N)``. crf_ner is
``configs/bilstm_crf.cfg``; spaCy's ``ner`` is ``spacy init config --pipeline ner --optimize
efficiency``. Without ``--crf-model``/``--ner-model`` both are built from their configs and
initialised with the four CoNLL labels but not trained: inference costs the same whatever the
weights (same layers, one CRF call or one parser pass per batch).

Every measurement runs in a fresh process without OMP_*/MKL_* variables, so that it sees the
defaults a user gets; the best of ``--passes`` passes is kept (for n_process=2 a pass includes
starting the workers, as a user sees it). "loaded" runs the same while one other process spins
on one core (``while True: pass``). The crf_ner row at 2 torch threads
(``SPACY_CRF_NER_THREADS=2``, torch's default on 2 cores) shows why the default is 1.

    python benchmarks/throughput.py                     # ~4 min on 2 cores
    python benchmarks/throughput.py --crf-model training/model-best --ner-model ner/model-best

The corpus is read from --data-dir (default ../shared/data), never copied into the repo. Run it
on an otherwise idle machine; the script prints the load average before it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("LOC", "MISC", "ORG", "PER")
THREAD_VARS = ("OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_", "SPACY_CRF_NER_THREADS")


def read_sentences(path: Path) -> list[str]:
    """The sentences of a CoNLL-2003 file, tokens joined by spaces."""
    sentences, tokens = [], []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append(" ".join(tokens))
                tokens = []
        else:
            tokens.append(line.split()[0])
    if tokens:
        sentences.append(" ".join(tokens))
    return sentences


def build_models(out: Path, sample: list[str]) -> tuple[Path, Path]:
    """crf_ner and spaCy ner pipelines from their configs, initialised but not trained."""
    from spacy.cli.init_config import init_config
    from spacy.training import Example
    from spacy.util import load_config, load_model_from_config

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    configs = {
        "crf_ner": load_config(ROOT / "configs" / "bilstm_crf.cfg", interpolate=True),
        "spacy_ner": init_config(lang="en", pipeline=["ner"], optimize="efficiency").interpolate(),
    }
    for name, config in configs.items():
        path = out / name
        paths[name] = path
        if path.exists():
            continue
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        pipe = nlp.get_pipe("crf_ner" if name == "crf_ner" else "ner")
        for label in LABELS:
            pipe.add_label(label)
        docs = [nlp.make_doc(text) for text in sample]
        nlp.initialize(lambda docs=docs: [Example(doc, doc) for doc in docs])
        nlp.to_disk(path)
    return paths["crf_ner"], paths["spacy_ner"]


def measure(model: str, data: Path, n_process: int, batch_size: int, passes: int) -> None:
    """In a fresh process: words/second of ``nlp.pipe`` over the test sentences."""
    import spacy

    texts = read_sentences(data)
    nlp = spacy.load(model)
    list(nlp.pipe(texts[:200], batch_size=batch_size))  # warm-up, in this process
    best, words = float("inf"), 0
    for _ in range(passes):
        begin = time.perf_counter()
        words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size, n_process=n_process))
        best = min(best, time.perf_counter() - begin)
    print(json.dumps({"words": words, "seconds": best, "wps": words / best}))


def run_measure(args, model: Path, n_process: int, extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREAD_VARS)}
    env.update(extra_env)
    cmd = [
        sys.executable, __file__, "--measure", str(model), "--n-process", str(n_process),
        "--data-dir", str(args.data_dir), "--batch-size", str(args.batch_size),
        "--passes", str(args.passes),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--crf-model", type=Path, default=None)
    parser.add_argument("--ner-model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-throughput"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-process", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = args.data_dir / "conll2003" / "eng.testb"
    if args.measure:
        measure(args.measure, data, args.n_process, args.batch_size, args.passes)
        return

    import spacy
    import torch

    texts = read_sentences(data)
    crf_model, ner_model = build_models(args.out, texts[:20])
    crf_model = args.crf_model or crf_model
    ner_model = args.ner_model or ner_model
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or ''} "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}, "
        f"spaCy {spacy.__version__}; {len(texts)} sentences of eng.testb; batch_size "
        f"{args.batch_size}; best of {args.passes} passes; load average before: "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    systems = [
        ("spaCy ner", ner_model, {}, (1, 2)),
        ("crf_ner", crf_model, {}, (1, 2)),
        ("crf_ner, 2 torch threads", crf_model, {"SPACY_CRF_NER_THREADS": "2"}, (1,)),
    ]
    results: dict[tuple[str, int, str], float] = {}
    for load in ("idle", "loaded"):
        hog = None
        if load == "loaded":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for name, model, env, n_values in systems:
                for n_process in n_values:
                    found = run_measure(args, model, n_process, env)
                    results[(name, n_process, load)] = found["wps"]
                    print(
                        f"  {name}, n_process={n_process}, {load}: {found['wps']:.0f} words/s "
                        f"({found['words']} words in {found['seconds']:.2f} s)",
                        flush=True,
                    )
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    print("\n| system | n_process | idle words/s | loaded words/s | loaded / idle |")
    print("|---|---|---|---|---|")
    for name, _, _, n_values in systems:
        for n_process in n_values:
            idle, loaded = results[(name, n_process, "idle")], results[(name, n_process, "loaded")]
            print(f"| {name} | {n_process} | {idle:.0f} | {loaded:.0f} | {loaded / idle:.2f} |")
    print(
        "\ncrf_ner / spaCy ner words/s (goal >= 1), and slowdown under load (goal: crf_ner's "
        "loaded/idle >= spaCy ner's):"
    )
    for n_process in (1, 2):
        crf = [results[("crf_ner", n_process, load)] for load in ("idle", "loaded")]
        ner = [results[("spaCy ner", n_process, load)] for load in ("idle", "loaded")]
        print(
            f"  n_process={n_process}: idle {crf[0] / ner[0]:.2f}x, loaded {crf[1] / ner[1]:.2f}x; "
            f"loaded/idle crf_ner {crf[1] / crf[0]:.2f} vs spaCy ner {ner[1] / ner[0]:.2f}"
        )


if __name__ == "__main__":
    main()
