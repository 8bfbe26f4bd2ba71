"""crf_ner against spaCy's own ``ner``, each trained to its early stop, averaged over seeds.

For one corpus it converts train/dev/test (as ``compare_ner.py`` does), then for every seed and
system runs ``spacy train`` with the system's config as shipped and ``--system.seed`` set,
until the config's own early stop (``patience``) or ``--max-steps``; ``model-best`` (best dev
checkpoint) is scored on the test set by spaCy's scorer and seqeval. It prints one row per run
(seed, steps, time, dev F, test P/R/F) and the mean ± standard deviation per system, and the
difference of the means.

    python benchmarks/accuracy.py --corpus weibo --seeds 3 --out /tmp/acc-weibo
    python benchmarks/accuracy.py --corpus resume --seeds 3 --out /tmp/acc-resume
    python benchmarks/accuracy.py --corpus conll --seeds 1 --out /tmp/acc-conll

Extra config overrides for crf_ner go after ``--crf-override`` (e.g. trying a feature:
``--crf-override components.crf_ner.model.tok2vec.ngram_size=2``), so what the shipped
configs should use is decided by this script's numbers. Corpora are read from --data-dir
(default ../shared/data), never copied into the repository. Runs train one after another on
--threads threads each: run it on an idle machine if the words/s figures matter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_logger import read_records  # noqa: E402
from compare_ner import CORPORA, ROOT, evaluate, prepare_corpus, run, spacy_ner_config  # noqa: E402


def convert_options(corpus: Path) -> list[str] | None:
    """The options ``prepare_corpus`` converted ``corpus`` with (None if not recorded)."""
    record = corpus / "convert.json"
    return json.loads(record.read_text()) if record.exists() else None


def train_to_early_stop(
    config: Path,
    corpus: Path,
    files: tuple[str, ...],
    output: Path,
    seed: int,
    threads: int,
    max_steps: int,
    overrides: list[str],
    reuse: bool = False,
) -> tuple[list[dict], float]:
    """``spacy train`` with the config's own patience; the JSONL records of each evaluation.

    A finished run leaves ``<output>.run.json`` (the config's hash, seed, max_steps, overrides,
    the corpus's convert options and the training seconds), written only after ``spacy train``
    returned. With ``reuse`` a run is kept when that file matches this call; a run that was cut
    off (``model-best`` exists but no ``.run.json``) or was trained with another config,
    overrides or conversion of the corpus (``prepare_corpus`` converts again when its options
    change) is trained again.
    """
    log = output.with_suffix(".train.jsonl")
    done = output.with_suffix(".run.json")
    settings = {
        "config_sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest(),
        "seed": seed,
        "max_steps": max_steps,
        "overrides": list(overrides),
        "convert": convert_options(corpus),
    }
    if reuse and done.exists() and (output / "model-best").exists() and log.exists():
        finished = json.loads(done.read_text())
        if {key: finished.get(key) for key in settings} == settings:
            records = read_records(log)
            return records, finished["seconds"]
        print(f"accuracy.py: {output} was trained with other settings; training it again")
    done.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    env = {"BENCH_LOG": str(log), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable, "-m", "spacy", "train", config, "--output", output,
        "--paths.train", corpus / f"{files[0]}.spacy", "--paths.dev", corpus / f"{files[1]}.spacy",
        "--code", ROOT / "benchmarks" / "bench_logger.py",
        "--training.logger", '{"@loggers":"spacy_crf_ner.bench_logger.v1"}',
        "--system.seed", str(seed),
    ]  # fmt: skip
    if max_steps:
        cmd += ["--training.max_steps", str(max_steps)]
    for override in overrides:
        key, _, value = override.partition("=")
        cmd += [f"--{key}", value]
    begin = time.perf_counter()
    run(cmd, env=dict(os.environ, **env))
    elapsed = time.perf_counter() - begin
    records = read_records(log)
    done.write_text(json.dumps({**settings, "seconds": elapsed}, indent=2))
    return records, elapsed


def with_n_sents(spec: dict, n_sents: int | None) -> dict:
    """``spec`` converting ``n_sents`` sentences per Doc (None: unchanged)."""
    if n_sents is None:
        return spec
    options = list(spec["convert"])
    if "--n-sents" in options:
        del options[options.index("--n-sents") : options.index("--n-sents") + 2]
    return {**spec, "convert": [*options, "--n-sents", str(n_sents)]}


def summary(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the first seed (seeds run from it up); two runs on two cores use two --out folders",
    )
    parser.add_argument("--systems", default="crf_ner,spacy_ner")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="0: the config's max_steps")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep finished runs in --out trained with the same config, seed and overrides",
    )
    parser.add_argument("--crf-override", nargs="*", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument(
        "--crf-config",
        type=Path,
        default=None,
        help="train crf_ner with this config instead of the corpus's shipped one (a change "
        "that overrides cannot make, such as adding a section)",
    )
    parser.add_argument(
        "--n-sents",
        type=int,
        default=None,
        help="sentences per Doc for all three splits (convert --n-sents; 0: one Doc per "
        "-DOCSTART- document); default: the corpus's own conversion",
    )
    args = parser.parse_args()
    if args.crf_config is not None and not args.crf_config.is_file():
        parser.error(f"--crf-config: no such config file: {args.crf_config}")
    spec = with_n_sents(CORPORA[args.corpus], args.n_sents)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus(spec, args.data_dir, args.out)
    configs = {
        "crf_ner": args.crf_config or ROOT / spec["config"],
        "spacy_ner": spacy_ner_config(spec["lang"], args.out),
    }
    test = corpus / f"{spec['files'][2]}.spacy"
    runs: list[dict] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in args.systems.split(","):
            output = args.out / f"{name}-seed{seed}"
            overrides = args.crf_override if name == "crf_ner" else []
            records, elapsed = train_to_early_stop(
                configs[name], corpus, spec["files"], output, seed, args.threads,
                args.max_steps, overrides, args.reuse,
            )  # fmt: skip
            scores = evaluate(output / "model-best", test, args.threads)
            best = max(records, key=lambda r: r["score"]) if records else {"step": 0, "score": 0}
            runs.append(
                {
                    "system": name,
                    "seed": seed,
                    "steps": records[-1]["step"] if records else 0,
                    "best_step": best["step"],
                    "seconds": elapsed,
                    "best_dev_f": best["score"],
                    "test": scores["spacy"]["micro"],
                    "test_seqeval": scores["seqeval"]["micro"],
                    "infer_words_per_second": scores["words_per_second"],
                    "overrides": overrides,
                }
            )
            (args.out / "runs.json").write_text(json.dumps(runs, indent=2))
    print_tables(args.corpus, runs)


def print_tables(corpus: str, runs: list[dict]) -> None:
    print(f"\n## {corpus}: model-best (early stop on dev) on the test set, per run\n")
    print(
        "| system | seed | steps | best step | train s | best dev F | test P | test R "
        "| test F (spaCy) | test F (seqeval) | infer words/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        s, q = r["test"], r["test_seqeval"]
        print(
            f"| {r['system']} | {r['seed']} | {r['steps']} | {r['best_step']} | "
            f"{r['seconds']:.0f} | {100 * r['best_dev_f']:.2f} | {100 * s['precision']:.2f} | "
            f"{100 * s['recall']:.2f} | {100 * s['f1']:.2f} | {100 * q['f1']:.2f} | "
            f"{r['infer_words_per_second']:.0f} |"
        )
    systems = list(dict.fromkeys(r["system"] for r in runs))
    print(f"\n## {corpus}: mean ± standard deviation over seeds\n")
    print("| system | runs | test F (spaCy) | test F (seqeval) | best dev F | infer words/s |")
    print("|---|---|---|---|---|---|")
    means = {}
    for name in systems:
        mine = [r for r in runs if r["system"] == name]
        f1 = [r["test"]["f1"] for r in mine]
        means[name] = statistics.fmean(f1)
        speed = statistics.fmean(r["infer_words_per_second"] for r in mine)
        print(
            f"| {name} | {len(mine)} | {summary(f1)} | "
            f"{summary([r['test_seqeval']['f1'] for r in mine])} | "
            f"{summary([r['best_dev_f'] for r in mine])} | {speed:.0f} |"
        )
    if {"crf_ner", "spacy_ner"} <= set(means):
        print(
            f"\ncrf_ner - spacy ner, mean test F1: "
            f"{100 * (means['crf_ner'] - means['spacy_ner']):+.2f}"
        )


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as err:
        sys.exit(f"accuracy.py: a command failed ({err.returncode}): {err.cmd}")
