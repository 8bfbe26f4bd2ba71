"""Deploying without torch: torch fp32 vs ONNX fp32 vs ONNX int8, side by side.

    python benchmarks/deploy.py --model /tmp/bench-deploy/bilstm/model-best \\
        --test /tmp/bench-deploy/corpus/eng.testb.spacy --out /tmp/bench-deploy/export
    # the transformer-CRF (MiniLM, configs/transformer_crf.cfg; BENCHMARKS.md §10)
    python benchmarks/deploy.py --model /tmp/bench-deploy-trf/minilm/model-best \\
        --test /tmp/bench-deploy/corpus/eng.testb.spacy --out /tmp/bench-deploy-trf/export \\
        --repeats 1

Any crf_ner pipeline that ``export`` takes works: a BiLSTM-CRF or a transformer-CRF (whose
torch variant runs spacy-transformers; its ONNX variants run without torch, transformers and
spacy-transformers, as a torch-free install would).

The ONNX pipelines are exported from ``--model`` first (``python -m spacy_crf_ner export``,
fp32 and ``--int8``) unless they exist. Then every variant is measured in a fresh process of
its own, one after the other (the ONNX ones with torch blocked, as in a torch-free install):
load time, words/s of ``nlp.pipe`` over the test texts at one thread (best of ``--repeats``
passes after a warm-up) and with ``n_process=2``, peak RSS of the process, size on disk, and
test F1 (spaCy's scorer on the gold tokens). Ratios are against torch fp32 of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("torch-fp32", "onnx-fp32", "onnx-int8")

# As in a torch-free install: importing torch fails (a finder raises, so torch is never in
# sys.modules, which scipy's array-API helpers read) and the packages that need torch are
# hidden from spaCy's entry points.
BLOCK_TORCH = """
import importlib.abc, importlib.metadata as md, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
import catalogue

def needs_torch(ep):
    dist = getattr(ep, "dist", None)
    if dist is None or dist.name.replace("_", "-") == "spacy-crf-ner":
        return False
    return any(r.split(";")[0].strip().lower().startswith("torch")
               for r in (dist.requires or []) if "extra ==" not in r)

catalogue.AVAILABLE_ENTRY_POINTS = md.EntryPoints(tuple(
    ep for group in md.entry_points().values() for ep in group if not needs_torch(ep)))
"""


def disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def worker(variant: str, path: Path, test: Path, repeats: int, n_process: int) -> dict:
    """Measure one variant in this process (called in a fresh interpreter)."""
    if variant.startswith("onnx"):
        exec(BLOCK_TORCH, {})
    import spacy
    from spacy.tokens import DocBin

    from spacy_crf_ner.evaluate import evaluate_pipeline

    begin = time.perf_counter()
    nlp = spacy.load(path)
    load_seconds = time.perf_counter() - begin
    gold = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    texts = [doc.text for doc in gold]
    n_words = sum(len(nlp.make_doc(t)) for t in texts)
    for _ in nlp.pipe(texts[:20]):
        pass
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        for _ in nlp.pipe(texts):
            pass
        best = min(best, time.perf_counter() - begin)
    result = {"variant": variant, "load_s": load_seconds, "words": n_words,
              "wps_1": n_words / best}  # fmt: skip
    if n_process > 1:
        begin = time.perf_counter()
        for _ in nlp.pipe(texts, n_process=n_process, batch_size=64):
            pass
        result[f"wps_{n_process}"] = n_words / (time.perf_counter() - begin)
    scores = evaluate_pipeline(nlp, test)
    result["f1"] = scores["spacy"]["scores"]["ents_f"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["torch_imported"] = "torch" in sys.modules
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a torch crf_ner pipeline")
    parser.add_argument("--test", type=Path, required=True, help="gold .spacy test set")
    parser.add_argument("--out", type=Path, required=True, help="where the exports go")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-process", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.path, args.test, args.repeats, args.n_process)
        print("RESULT " + json.dumps(result), flush=True)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SPACY_CRF_NER_THREADS="1")
    paths = {"torch-fp32": args.model, "onnx-fp32": args.out / "onnx-fp32",
             "onnx-int8": args.out / "onnx-int8"}  # fmt: skip
    for variant, flags in (("onnx-fp32", []), ("onnx-int8", ["--int8"])):
        if not paths[variant].exists():
            cmd = [sys.executable, "-m", "spacy_crf_ner", "export", args.model, paths[variant]]
            subprocess.run([str(c) for c in [*cmd, *flags]], check=True, env=env)
    results = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"start {started}, load average {os.getloadavg()}", flush=True)
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--worker", variant, "--path", paths[variant],
               "--model", args.model, "--test", args.test, "--out", args.out,
               "--repeats", args.repeats, "--n-process", args.n_process]  # fmt: skip
        print("$", " ".join(str(c) for c in cmd), flush=True)
        done = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{variant} failed")
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
        results[variant] = json.loads(line[len("RESULT ") :])
        results[variant]["size_mb"] = disk_size(paths[variant]) / 1e6
        print(json.dumps(results[variant]), flush=True)
    ended = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"end {ended}, load average {os.getloadavg()}", flush=True)
    print_table(results, args.n_process)


def print_table(results: dict, n_process: int) -> None:
    base = results.get("torch-fp32")
    key_n = f"wps_{n_process}"
    print(
        f"\n| variant | words/s 1 thread | ratio | words/s n_process={n_process} | ratio | "
        "load s | peak RSS MB | size on disk MB | test F1 | ΔF1 | torch imported |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = r["wps_1"] / base["wps_1"] if base else float("nan")
        ratio_n = r.get(key_n, float("nan")) / base.get(key_n, float("nan")) if base else 0
        delta = 100 * (r["f1"] - base["f1"]) if base else float("nan")
        print(
            f"| {name} | {r['wps_1']:.0f} | {ratio:.2f}× | {r.get(key_n, float('nan')):.0f} | "
            f"{ratio_n:.2f}× | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['size_mb']:.1f} | "
            f"{100 * r['f1']:.2f} | {delta:+.2f} | {r['torch_imported']} |"
        )


if __name__ == "__main__":
    main()
