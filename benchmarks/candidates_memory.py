"""Peak memory and time of crf_ner on one long document: entity_probs alone vs candidates.

The document is the tokens of CoNLL-2003's test set (then its training set, as needed)
concatenated into one Doc of ``--tokens`` tokens without sentence boundaries, i.e. one CRF
sequence. The pipeline is ``configs/bilstm_crf.cfg`` with the four CoNLL labels, initialised
but not trained (built by ``benchmarks/throughput.py``, or ``--model``). Each setting runs in
a fresh process on one torch thread; peak memory is that process's ``ru_maxrss``, time is
``nlp(doc)`` alone. Goal (issue 10): with ``candidate_threshold`` on, peak <= 1.5x and time
<= 2x those of ``entity_probs`` alone.

    python benchmarks/candidates_memory.py --tokens 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def words(data_dir: Path, n_tokens: int) -> list[str]:
    found: list[str] = []
    for name in ("eng.testb", "eng.train"):
        for line in (data_dir / "conll2003" / name).read_text(encoding="utf8").splitlines():
            if line.strip() and not line.startswith("-DOCSTART-"):
                found.append(line.split()[0])
                if len(found) == n_tokens:
                    return found
    raise SystemExit(f"the corpus has fewer than {n_tokens} tokens")


def measure(model: str, setting: str, data_dir: Path, n_tokens: int, threshold: float) -> None:
    import spacy
    import torch
    from spacy.tokens import Doc

    torch.set_num_threads(1)
    config = {"entity_probs": True}
    if setting == "candidates":
        config["candidate_threshold"] = threshold
    nlp = spacy.load(model, config={"components": {"crf_ner": config}})
    doc = Doc(nlp.vocab, words=words(data_dir, n_tokens))
    begin = time.perf_counter()
    doc = nlp(doc)
    seconds = time.perf_counter() - begin
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    found = len(doc.spans.get("crf_ner_candidates", []))
    print(json.dumps({"seconds": seconds, "peak": peak, "candidates": found}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-throughput"))
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--setting", default="entity_probs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.setting, args.data_dir, args.tokens, args.threshold)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import build_models, read_sentences

    model = args.model
    if model is None:
        sample = read_sentences(args.data_dir / "conll2003" / "eng.testb")[:20]
        model = build_models(args.out, sample)[0]
    results = {}
    for setting in ("entity_probs", "candidates"):
        cmd = [
            sys.executable, __file__, "--measure", str(model), "--setting", setting,
            "--data-dir", str(args.data_dir), "--tokens", str(args.tokens),
            "--threshold", str(args.threshold),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        results[setting] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"# {args.tokens} tokens in one doc, candidate_threshold {args.threshold}, 1 thread")
    print("| setting | seconds | peak MB | candidates kept |")
    print("|---|---|---|---|")
    for setting, found in results.items():
        print(
            f"| {setting} | {found['seconds']:.1f} | {found['peak'] / 2**20:.0f} | "
            f"{found['candidates']} |"
        )
    alone, with_candidates = results["entity_probs"], results["candidates"]
    print(
        f"candidates / entity_probs alone: peak {with_candidates['peak'] / alone['peak']:.2f}x "
        f"(goal <= 1.5x), time {with_candidates['seconds'] / alone['seconds']:.2f}x (goal <= 2x)"
    )


if __name__ == "__main__":
    main()
