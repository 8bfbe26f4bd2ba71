"""Does a decode-time bias against ``O`` buy recall, and F1, for a trained crf_ner?

Models trained on small Chinese corpora (Weibo) have high precision and low recall (BENCHMARKS.md
§11), so one cheap idea is to lower the ``O`` tag's emission score by a constant before the
constrained Viterbi search, choosing the constant on dev. This script measures it: for each
pipeline it computes the emissions of the dev and test docs once, decodes them with each bias,
and prints precision / recall / F1 (spaCy's scorer) on both, marking the bias that is best on
dev. Nothing is trained or saved.

    python benchmarks/decode_bias.py --dev DEV.spacy --test TEST.spacy MODEL [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def scores_by_bias(nlp, path: Path, biases: tuple[float, ...]) -> dict[float, tuple]:
    """(P, R, F) of crf_ner's entities on the gold docs at ``path``, for each bias."""
    from spacy.scorer import Scorer
    from spacy.tokens import DocBin
    from spacy.training import Example

    from spacy_crf_ner.evaluate import token_copy

    pipe = nlp.get_pipe("crf_ner")
    outside = pipe.tag_names.index("O")
    golds = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    # the gold tokens, through the components before crf_ner, as ``evaluate`` and
    # ``calibrate`` do
    upstream = nlp.pipe_names[: nlp.pipe_names.index("crf_ner")]
    with nlp.select_pipes(enable=upstream):
        docs = list(nlp.pipe(token_copy(gold, nlp.vocab) for gold in golds))
    emissions = pipe.model.predict(docs)
    result = {}
    for bias in biases:
        biased = [scores.copy() for scores in emissions]
        for scores in biased:
            scores[:, outside] -= bias
        predicted = [doc.copy() for doc in docs]
        pipe.set_annotations(predicted, pipe.decode(docs, biased, scored=False))
        s = Scorer.score_spans(
            [Example(p, g) for p, g in zip(predicted, golds, strict=True)], "ents"
        )
        result[bias] = (s["ents_p"], s["ents_r"], s["ents_f"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import spacy
    import torch

    torch.set_num_threads(args.threads)
    summary = {}
    for model in args.models:
        nlp = spacy.load(model)
        dev = scores_by_bias(nlp, args.dev, BIASES)
        test = scores_by_bias(nlp, args.test, BIASES)
        best = max(BIASES, key=lambda b: dev[b][2])
        print(f"\n{model}\n| O bias | dev P | dev R | dev F | test P | test R | test F |")
        print("|---|---|---|---|---|---|---|")
        for b in BIASES:
            cells = " | ".join(f"{100 * x:.2f}" for x in (*dev[b], *test[b]))
            print(f"| {b}{' (best dev)' if b == best else ''} | {cells} |")
        summary[str(model)] = {"best_bias": best, "test_f_at_best": test[best][2],
                               "test_f_unbiased": test[0.0][2]}  # fmt: skip
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
