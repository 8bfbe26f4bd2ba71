"""Are crf_ner's entity probabilities calibrated? Reliability table, ECE, thresholds, cost.

Runs a trained pipeline (e.g. the BiLSTM-CRF of ``compare_ner.py``) over a gold ``.spacy`` set
twice in one process — plain prediction and with ``entity_probs`` on — and prints:

* a reliability table: predicted entities binned by probability, against the fraction of them
  that are correct (exact boundaries and label), and the expected calibration error;
* precision / recall / F1 when keeping only entities at or above 0.5, 0.7 and 0.9;
* the time of prediction with probabilities as a ratio to plain prediction.

    python benchmarks/calibration.py /tmp/bench-conll/crf_ner/model-best \\
        /tmp/bench-conll/corpus/eng.testb.spacy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import numpy
    import spacy
    import torch
    from spacy.tokens import Doc, DocBin

    from spacy_crf_ner.calibrate import RELIABILITY_BINS as BINS
    from spacy_crf_ner.calibrate import expected_calibration_error

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--component", default="crf_ner")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nlp = spacy.load(args.model)
    ner = nlp.get_pipe(args.component)
    gold = list(DocBin().from_disk(args.data).get_docs(nlp.vocab))
    words = sum(len(doc) for doc in gold)

    def fresh() -> list[Doc]:
        return [Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
                for d in gold]  # fmt: skip

    def run(probs: bool) -> tuple[list[Doc], float]:
        ner.entity_probs = probs
        docs = fresh()
        begin = time.perf_counter()
        out = list(nlp.pipe(docs, batch_size=256))
        return out, time.perf_counter() - begin

    run(False)  # warm-up
    timings = {False: [], True: []}
    for _ in range(2):
        for probs in (False, True):
            docs, seconds = run(probs)
            timings[probs].append(seconds)
    plain, scored = min(timings[False]), min(timings[True])

    predicted = []  # (probability, correct)
    n_gold = 0
    for pred, ref in zip(docs, gold, strict=True):
        gold_set = {(e.start, e.end, e.label_) for e in ref.ents}
        n_gold += len(gold_set)
        for ent in pred.ents:
            predicted.append((float(ent._.crf_prob), (ent.start, ent.end, ent.label_) in gold_set))

    rows = []
    for low, high in zip(BINS[:-1], BINS[1:], strict=True):
        inside = [(p, c) for p, c in predicted if low <= p < high]
        if not inside:
            rows.append((low, high, 0, None, None))
            continue
        mean_p = sum(p for p, _ in inside) / len(inside)
        accuracy = sum(c for _, c in inside) / len(inside)
        rows.append((low, high, len(inside), mean_p, accuracy))
    ece = expected_calibration_error(
        numpy.array([p for p, _ in predicted]), numpy.array([c for _, c in predicted], dtype=float)
    )
    print(f"# {args.model} on {args.data}: {len(gold)} docs, {words} words, {n_gold} gold entities")
    print("\n| probability bin | entities | mean probability | fraction correct |")
    print("|---|---|---|---|")
    for low, high, count, mean_p, accuracy in rows:
        label = f"[{low:.2f}, {min(high, 1.0):.2f}{']' if high > 1 else ')'}"
        if count:
            print(f"| {label} | {count} | {mean_p:.3f} | {accuracy:.3f} |")
        else:
            print(f"| {label} | 0 | - | - |")
    print(f"\nExpected calibration error (entity level, {len(BINS) - 1} bins): {ece:.4f}")
    print("\n| keep entities with p >= | precision | recall | F1 | kept |")
    print("|---|---|---|---|---|")
    thresholds = {}
    for threshold in (0.0, 0.5, 0.7, 0.9):
        kept = [c for p, c in predicted if p >= threshold]
        tp = sum(kept)
        precision = tp / len(kept) if kept else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        thresholds[threshold] = {"precision": precision, "recall": recall, "f1": f1}
        print(f"| {threshold:.1f} | {100 * precision:.2f} | {100 * recall:.2f} | {100 * f1:.2f} "
              f"| {len(kept)} |")  # fmt: skip
    print(
        f"\nPrediction time: plain {plain:.2f} s ({words / plain:.0f} words/s), with entity "
        f"probabilities {scored:.2f} s ({words / scored:.0f} words/s): ratio {scored / plain:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"bins": rows, "ece": ece, "thresholds": thresholds, "time_ratio": scored / plain},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
