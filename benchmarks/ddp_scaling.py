"""Data-parallel training: 1 vs 2 CPU workers (one torch thread each) on CoNLL-2003.

Both runs train ``configs/bilstm_crf.cfg`` with ``python -m spacy_crf_ner train --workers W``
for the same number of steps, i.e. on the same global batches (the same examples per step),
side by side in one run of this script. A logger registered here records, for every step,
the wall-clock time, and at each evaluation the words seen and the dev F1. Printed:

* training words/s of each run, without the evaluations and saving (an evaluation step's
  time beyond the median training step is taken as evaluation), the ratio and the scaling
  efficiency (ratio / workers);
* dev F1 at the same steps (= the same examples seen), and at the same wall-clock budget
  (the 2-worker run's total time);
* the all-reduce volume per step: the trainable parameters x 4 bytes (dense), and what the
  row-sparse embeddings send on this corpus.

    python benchmarks/ddp_scaling.py --steps 200 --eval-every 50 --batch-words 2000 \
        --out /tmp/bench-ddp

A CoNLL-2003 doc is a whole article (~215 words), and the batcher never splits a doc: the
config's schedule (100 -> 1000 words) makes batches of 1 to 5 articles, too few to share
between workers early on. So the global batch is fixed at --batch-words (default 2000: about
1000 words per worker, the config's final batch size), the same for both runs.

The corpus is converted from --data-dir (default ../shared/data/conll2003) with
``spacy_crf_ner convert``, never copied into the repo. Run it alone on the machine
(``flock /tmp/bench.lock``): the two workers need the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spacy.util import registry

ROOT = Path(__file__).resolve().parent.parent
FILES = ("eng.train", "eng.testa")


@registry.loggers("spacy_crf_ner.ddp_bench_logger.v1")
def ddp_bench_logger():
    """spaCy's console table, plus a JSONL file (``DDP_BENCH_LOG``): every step's wall-clock
    time, and at each evaluation the step, words seen and scores."""
    from spacy.training.loggers import console_logger_v3

    console = console_logger_v3(progress_bar=None, console_output=True, output_file=None)

    def setup(nlp, stdout=sys.stdout, stderr=sys.stderr):
        log_step, finalize = console(nlp, stdout, stderr)
        stream = open(os.environ["DDP_BENCH_LOG"], "a", encoding="utf-8")
        last = time.perf_counter()

        def step(info):
            nonlocal last
            log_step(info)
            now = time.perf_counter()
            record = {"seconds": now - last}
            if info is not None:
                record.update(
                    step=info["step"],
                    words=info["words"],
                    score=info["score"],
                    ents_f=info["other_scores"].get("ents_f"),
                )
            stream.write(json.dumps(record) + "\n")
            last = time.perf_counter()  # the JSON write is not the next step's time

        def close():
            finalize()
            stream.close()

        return step, close

    return setup


def run(cmd: list, **kwargs) -> None:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def train(
    workers: int, corpus: Path, out: Path, steps: int, eval_every: int, batch_words: int
) -> dict:
    log = out / f"workers{workers}.jsonl"
    log.unlink(missing_ok=True)
    env = dict(os.environ, DDP_BENCH_LOG=str(log), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "spacy_crf_ner", "train", ROOT / "configs" / "bilstm_crf.cfg",
        "--workers", workers, "--output", out / f"workers{workers}",
        "--code", Path(__file__).resolve(),
        "--paths.train", corpus / f"{FILES[0]}.spacy", "--paths.dev", corpus / f"{FILES[1]}.spacy",
        "--training.logger", '{"@loggers":"spacy_crf_ner.ddp_bench_logger.v1"}',
        "--training.max_steps", steps, "--training.max_epochs", 0,
        "--training.patience", 0, "--training.eval_frequency", eval_every,
    ]  # fmt: skip
    if batch_words:
        cmd += [
            "--training.batcher.size.start", batch_words, "--training.batcher.size.stop",
            batch_words,
        ]  # fmt: skip
    begin = time.perf_counter()
    run(cmd, env=env)
    wall = time.perf_counter() - begin
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return summarise(records, wall)


def summarise(records: list[dict], wall: float) -> dict:
    train_steps = [r["seconds"] for r in records if "step" not in r]
    evals = [r for r in records if "step" in r]
    median_step = statistics.median(train_steps)
    eval_seconds = sum(max(r["seconds"] - median_step, 0.0) for r in evals)
    loop_seconds = sum(r["seconds"] for r in records)
    train_seconds = loop_seconds - eval_seconds
    clock, curve = 0.0, []
    for r in records:
        clock += r["seconds"]
        if "step" in r:
            curve.append({"step": r["step"], "time": clock, "f": r["ents_f"], "words": r["words"]})
    return {
        "wall": wall,
        "loop_seconds": loop_seconds,
        "eval_seconds": eval_seconds,
        "train_seconds": train_seconds,
        "median_step": median_step,
        "words": evals[-1]["words"],
        "steps": evals[-1]["step"],
        "words_per_second": evals[-1]["words"] / train_seconds,
        "curve": curve,
    }


def f_at_time(curve: list[dict], seconds: float) -> tuple[float, int]:
    """The dev F of the last evaluation finished by ``seconds`` (and its step)."""
    done = [point for point in curve if point["time"] <= seconds + 1e-9]
    return (done[-1]["f"], done[-1]["step"]) if done else (0.0, 0)


def volume(corpus: Path, batch_words: int) -> dict:
    """Parameters of the trainable models; the rows of the embedding tables a typical step
    sends row-sparse (a global batch of ``batch_words`` words, its two shares on two workers)."""
    from spacy import util
    from spacy.tokens import Doc, DocBin
    from spacy.training import Example
    from spacy.training.initialize import init_nlp

    from spacy_crf_ner.distributed import SPARSE_MIN_ROWS, _slots, shard_batch, trainable_models

    config = util.load_config(
        ROOT / "configs" / "bilstm_crf.cfg",
        overrides={
            "paths.train": str(corpus / f"{FILES[1]}.spacy"),
            "paths.dev": str(corpus / f"{FILES[1]}.spacy"),
        },
    )
    nlp = init_nlp(config)
    models = trainable_models(nlp)
    slots = _slots(models)
    total = sum(s.param.numel() for s in slots)
    docs = list(DocBin().from_disk(corpus / f"{FILES[1]}.spacy").get_docs(nlp.vocab))
    batch, words = [], 0
    for doc in docs:
        if words >= batch_words:
            break
        words_of = [token.text for token in doc]
        spaces = [bool(token.whitespace_) for token in doc]
        batch.append(Example(Doc(nlp.vocab, words=words_of, spaces=spaces), doc))
        words += len(doc)
    sent = total
    used = {}
    for rank in range(2):
        share = shard_batch(batch, rank, 2)
        for model in models:
            for node in model.walk():
                for name in node.param_names:
                    if node.has_grad(name):
                        node.get_grad(name).fill(0)
        nlp.update(share, sgd=False)
        for i, slot in enumerate(_slots(models)):
            if slot.param.dim() == 2 and slot.param.shape[0] >= SPARSE_MIN_ROWS:
                rows = set(slot.grad.ne(0).any(dim=1).nonzero().flatten().tolist())
                used[i] = used.get(i, set()) | rows
    for i, rows in used.items():
        n_rows, width = slots[i].param.shape
        if len(rows) <= n_rows // 2:
            sent -= (n_rows - len(rows)) * width
    return {"parameters": total, "dense_bytes": total * 4, "sparse_bytes": sent * 4, "words": words}


def minilm_parameters() -> dict:
    """Trainable parameters of all-MiniLM-L6-v2's encoder (the transformer-CRF's encoder in
    BENCHMARKS.md section 5), counted on a randomly initialised model of the same shape
    (nothing is downloaded). The pooler gets no gradient in spacy-transformers, so it is not
    all-reduced; the word-embedding table is, row-sparse."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    model = BertModel(config)
    total = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("pooler"))
    embeddings = model.embeddings.word_embeddings.weight.numel()
    return {"parameters": total, "word_embeddings": embeddings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "conll2003",
        help="folder with eng.train and eng.testa (default: ../shared/data/conll2003)",
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument(
        "--batch-words",
        type=int,
        default=2000,
        help="words per global batch, every step (0: the config's 100 -> 1000 schedule)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.out / "corpus"
    if not all((corpus / f"{name}.spacy").exists() for name in FILES):
        run(
            [sys.executable, "-m", "spacy_crf_ner", "convert",
             *(args.data_dir / name for name in FILES), "--output-dir", corpus, "--lang", "en",
             "--overwrite"]
        )  # fmt: skip
    results = {
        w: train(w, corpus, args.out, args.steps, args.eval_every, args.batch_words) for w in (1, 2)
    }
    sizes = volume(corpus, args.batch_words or 1000)
    sizes["minilm"] = minilm_parameters()
    (args.out / "results.json").write_text(json.dumps({**results, "volume": sizes}, indent=2))
    print_report(results, sizes, args)


def print_report(results: dict, sizes: dict, args: argparse.Namespace) -> None:
    one, two = results[1], results[2]
    batch = f"{args.batch_words} words" if args.batch_words else "the config's schedule"
    print(f"\n## 1 vs 2 CPU workers, BiLSTM-CRF, CoNLL-2003, {args.steps} steps of {batch}\n")
    print(
        "| workers | steps | words | wall s | loop s | eval+save s | train s | median step ms "
        "| train words/s | final dev F |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w, r in results.items():
        print(
            f"| {w} | {r['steps']} | {r['words']:,} | {r['wall']:.1f} | {r['loop_seconds']:.1f} "
            f"| {r['eval_seconds']:.1f} | {r['train_seconds']:.1f} | {1000 * r['median_step']:.1f} "
            f"| {r['words_per_second']:,.0f} | {100 * r['curve'][-1]['f']:.2f} |"
        )
    ratio = two["words_per_second"] / one["words_per_second"]
    print(f"\nwords/s 2 workers / 1 worker: {ratio:.2f}x (efficiency {100 * ratio / 2:.0f}%)")
    print(
        f"whole loop (with evaluations) 1 worker / 2 workers: "
        f"{one['loop_seconds'] / two['loop_seconds']:.2f}x"
    )
    print("\ndev F at the same steps (same examples seen):")
    print("| step | 1 worker F | 2 workers F | 1 worker s | 2 workers s |")
    print("|---|---|---|---|---|")
    for a, b in zip(one["curve"], two["curve"], strict=False):
        print(
            f"| {a['step']} | {100 * a['f']:.2f} | {100 * b['f']:.2f} | {a['time']:.0f} "
            f"| {b['time']:.0f} |"
        )
    budget = two["loop_seconds"]
    f1, step1 = f_at_time(one["curve"], budget)
    f2, step2 = f_at_time(two["curve"], budget)
    print(
        f"\ndev F after the same wall-clock budget ({budget:.0f} s, the 2-worker run's loop): "
        f"1 worker {100 * f1:.2f} (step {step1}), 2 workers {100 * f2:.2f} (step {step2})"
    )
    print(
        f"\nall-reduce volume per step: {sizes['parameters']:,} parameters x 4 bytes = "
        f"{sizes['dense_bytes'] / 1e6:.1f} MB dense; row-sparse embeddings on a "
        f"{sizes['words']}-word global batch: {sizes['sparse_bytes'] / 1e6:.1f} MB"
    )
    minilm = sizes["minilm"]
    print(
        f"MiniLM-L6 encoder of the transformer-CRF: {minilm['parameters']:,} parameters x 4 "
        f"bytes = {minilm['parameters'] * 4 / 1e6:.1f} MB dense, of which the word-embedding "
        f"table {minilm['word_embeddings'] * 4 / 1e6:.1f} MB (row-sparse)"
    )


if __name__ == "__main__":
    main()
