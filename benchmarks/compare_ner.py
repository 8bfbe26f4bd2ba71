"""crf_ner (BiLSTM-CRF) against spaCy's own ``ner`` on the same data, features and time budget.

For one corpus it converts train/dev/test with ``spacy_crf_ner convert``, trains both pipelines
with ``spacy train`` for the same wall-clock budget (each keeps its best dev checkpoint), then
evaluates ``model-best`` on the test set with spaCy's scorer and seqeval and prints P/R/F,
training and inference words/second, and the ratios. spaCy's ``ner`` uses the config of
``spacy init config --pipeline ner --optimize efficiency`` (hash embeddings of NORM, PREFIX,
SUFFIX, SHAPE, no static vectors), the features our BiLSTM encoder uses too.

    python benchmarks/compare_ner.py --corpus conll --budget 600 --out /tmp/bench-conll
    python benchmarks/compare_ner.py --corpus resume --budget 300 --out /tmp/bench-resume

The corpora are read from --data-dir (default ../shared/data; BENCHMARKS.md says where each
comes from), never copied into the repo.
Run it on an idle machine: both systems train one after the other with the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_logger import read_records

ROOT = Path(__file__).resolve().parent.parent
CORPORA = {
    "conll": {
        "dir": "conll2003",
        "files": ("eng.train", "eng.testa", "eng.testb"),
        "lang": "en",
        "config": "configs/bilstm_crf.cfg",
        "convert": [],
    },
    "resume": {
        "dir": "resume_ner",
        "files": ("train.char.bmes", "dev.char.bmes", "test.char.bmes"),
        "lang": "zh",
        "config": "configs/bilstm_crf_zh.cfg",
        "convert": [],
    },
    "weibo": {
        "dir": "weibo_ner",
        "files": (
            "weiboNER_2nd_conll.train",
            "weiboNER_2nd_conll.dev",
            "weiboNER_2nd_conll.test",
        ),
        "lang": "zh",
        "config": "configs/bilstm_crf_zh.cfg",
        # One Doc per post: Weibo's sentences are unrelated posts, and grouping ten of them
        # (the converter's default without -DOCSTART-) feeds the BiLSTM a context that does not
        # exist (+1.7 test F over 3 seeds with one post per Doc, BENCHMARKS.md §11.9).
        "convert": ["--strip-digit", "--n-sents", "1"],
    },
}


def run(cmd: list[str], **kwargs) -> None:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def prepare_corpus(spec: dict, data_dir: Path, out: Path) -> Path:
    """Convert the corpus's train/dev/test files into ``out/corpus`` (once) and return it.

    The conversion options are recorded beside the files (``convert.json``): a corpus converted
    with other options (e.g. before Weibo became one post per Doc) is converted again, not reused.
    """
    corpus = out / "corpus"
    inputs = [data_dir / spec["dir"] / name for name in spec["files"]]
    missing = [str(path) for path in inputs if not path.exists()]
    if missing:
        sys.exit(f"corpus files not found: {', '.join(missing)} (see --data-dir)")
    options = ["--lang", spec["lang"], *spec["convert"]]
    record = corpus / "convert.json"
    converted = all((corpus / f"{name}.spacy").exists() for name in spec["files"])
    if not converted or not record.exists() or json.loads(record.read_text()) != options:
        run(
            [sys.executable, "-m", "spacy_crf_ner", "convert", *inputs, "--output-dir", corpus,
             "--overwrite", *options]
        )  # fmt: skip
        record.write_text(json.dumps(options))
    return corpus


def spacy_ner_config(lang: str, out: Path) -> Path:
    """spaCy's own CPU efficiency NER config for the language."""
    path = out / f"spacy_ner_{lang}.cfg"
    if not path.exists():
        run(
            [
                sys.executable, "-m", "spacy", "init", "config", path,
                "--lang", lang, "--pipeline", "ner", "--optimize", "efficiency", "--force",
            ]
        )  # fmt: skip
    return path


def train(name, config, corpus, files, out, budget, threads, skip=False):
    """``spacy train`` until the budget is spent; model-best is the best dev checkpoint."""
    output = out / name
    log = out / f"{name}.train.jsonl"
    if skip:
        records = read_records(log)
        return output / "model-best", records, records[-1]["seconds"]
    log.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_LOG=str(log), OMP_NUM_THREADS=str(threads))
    env["MKL_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    cmd = [
        sys.executable, "-m", "spacy", "train", config, "--output", output,
        "--paths.train", corpus / f"{files[0]}.spacy", "--paths.dev", corpus / f"{files[1]}.spacy",
        "--code", ROOT / "benchmarks" / "bench_logger.py",
        "--training.logger", '{"@loggers":"spacy_crf_ner.bench_logger.v1"}',
        "--training.max_steps", "100000", "--training.max_epochs", "0",
        "--training.patience", "100000", "--training.eval_frequency", "200",
    ]  # fmt: skip
    print("$", " ".join(str(c) for c in cmd), flush=True)
    begin = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env)
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait()
    elapsed = time.perf_counter() - begin
    records = read_records(log)
    return output / "model-best", records, elapsed


def evaluate(model: Path, data: Path, threads: int) -> dict:
    import spacy
    import torch

    from spacy_crf_ner.evaluate import evaluate_pipeline

    torch.set_num_threads(threads)
    nlp = spacy.load(model)
    return evaluate_pipeline(nlp, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="conll")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="folder with conll2003/, resume_ner/, weibo_ner/ (default: ../shared/data)",
    )
    parser.add_argument("--budget", type=float, default=600, help="training seconds per system")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--systems", default="crf_ner,spacy_ner")
    parser.add_argument(
        "--skip-train", action="store_true", help="evaluate the model-best of an earlier run"
    )
    args = parser.parse_args()
    spec = CORPORA[args.corpus]
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus(spec, args.data_dir, args.out)
    configs = {
        "crf_ner": ROOT / spec["config"],
        "spacy_ner": spacy_ner_config(spec["lang"], args.out),
    }
    test = corpus / f"{spec['files'][2]}.spacy"
    results = {}
    for name in args.systems.split(","):
        model, records, elapsed = train(
            name,
            configs[name],
            corpus,
            spec["files"],
            args.out,
            args.budget,
            args.threads,
            args.skip_train,
        )
        scores = evaluate(model, test, args.threads)
        train_words = records[-1]["words"] if records else 0
        results[name] = {
            "train_seconds": elapsed,
            "steps": records[-1]["step"] if records else 0,
            "best_dev_f": max((r["score"] for r in records), default=0.0),
            "train_words": train_words,
            "test": {
                "spacy": scores["spacy"]["micro"],
                "seqeval": scores["seqeval"]["micro"],
            },
            "infer_words_per_second": scores["words_per_second"],
            "records": records,
        }
        # Training throughput excludes the evaluations: their time is estimated from the
        # measured inference speed on the dev set.
        last = records[-1] if records else None
        if last:
            dev_size = _docbin_words(corpus / f"{spec['files'][1]}.spacy")
            eval_seconds = len(records) * dev_size / max(scores["words_per_second"], 1.0)
            results[name]["train_words_per_second"] = last["words"] / max(
                last["seconds"] - eval_seconds, 1e-9
            )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(args.corpus, results)


def _docbin_words(path: Path) -> int:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    return sum(len(doc) for doc in DocBin().from_disk(path).get_docs(nlp.vocab))


def print_table(corpus: str, results: dict) -> None:
    print(f"\n## {corpus}: test set, model-best after the same training budget\n")
    print(
        "| system | steps | train s | best dev F | test P | test R | test F (spaCy) "
        "| test F (seqeval) | train words/s | infer words/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s, q = r["test"]["spacy"], r["test"]["seqeval"]
        print(
            f"| {name} | {r['steps']} | {r['train_seconds']:.0f} | {100 * r['best_dev_f']:.2f} "
            f"| {100 * s['precision']:.2f} | {100 * s['recall']:.2f} | {100 * s['f1']:.2f} "
            f"| {100 * q['f1']:.2f} | {r.get('train_words_per_second', 0):.0f} "
            f"| {r['infer_words_per_second']:.0f} |"
        )
    if {"crf_ner", "spacy_ner"} <= set(results):
        ours, theirs = results["crf_ner"], results["spacy_ner"]
        delta = 100 * (ours["test"]["spacy"]["f1"] - theirs["test"]["spacy"]["f1"])
        train_ratio = ours.get("train_words_per_second", 0) / max(
            theirs.get("train_words_per_second", 1), 1
        )
        print(
            f"\ncrf_ner - spacy ner test F1: {delta:+.2f}; inference speed ratio "
            f"{ours['infer_words_per_second'] / theirs['infer_words_per_second']:.2f}x; "
            f"training speed ratio {train_ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
