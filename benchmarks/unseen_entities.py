"""Test F1 of trained pipelines split by whether each entity was seen in training.

Where does a model without pretrained vectors lose its test F1? An entity of the test set is
"seen" when the same text with the same label is an entity of the training set, "seen with
another label" when its text is an entity there under another label, else "unseen". Gold and
predicted entities are put in a group by their own text and label, so each group has a
precision, a recall and an F1; the last row is the micro F1 of all of them (spaCy's scorer
gives the same on the same tokens).

    python benchmarks/unseen_entities.py --train corpus/eng.train.spacy \\
        --test corpus/eng.testb.spacy --test corpus/eng.testa.spacy \\
        shipped=/tmp/acc-conll/crf_ner-seed0/model-best

The texts are re-tagged from the gold tokens (``Doc(words, spaces)``), so tokenisation does
not enter the comparison.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_speed import pipeline_args  # noqa: E402

GROUPS = ("seen", "seen with another label", "unseen")


def entity_groups(train_docs) -> tuple[set, set]:
    """The (text, label) pairs and the texts of the training set's entities."""
    pairs = {(ent.text, ent.label_) for doc in train_docs for ent in doc.ents}
    return pairs, {text for text, _ in pairs}


def group_of(text: str, label: str, pairs: set, texts: set) -> str:
    if (text, label) in pairs:
        return GROUPS[0]
    return GROUPS[1] if text in texts else GROUPS[2]


def count(gold_docs, predicted_docs, pairs: set, texts: set) -> Counter:
    counts: Counter = Counter()
    for gold, predicted in zip(gold_docs, predicted_docs, strict=True):
        gold_ents = {(e.start, e.end, e.label_): e.text for e in gold.ents}
        predicted_ents = {(e.start, e.end, e.label_): e.text for e in predicted.ents}
        for key, text in gold_ents.items():
            group = group_of(text, key[2], pairs, texts)
            counts[group, "gold"] += 1
            counts[group, "correct"] += key in predicted_ents
        for key, text in predicted_ents.items():
            counts[group_of(text, key[2], pairs, texts), "predicted"] += 1
    return counts


def prf(correct: int, gold: int, predicted: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="training DocBin (.spacy)")
    parser.add_argument("--test", type=Path, action="append", required=True,
                        help="a DocBin to score (repeat for several)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    pipelines = pipeline_args(args.models, "unseen_entities.py")
    for path in [args.train, *args.test]:
        if not path.is_file():
            sys.exit(f"unseen_entities.py: no DocBin at {path}")
    import spacy
    import torch
    from spacy.tokens import Doc, DocBin

    torch.set_num_threads(args.threads)
    print("| pipeline | test set | entities | share of gold | P | R | F |")
    print("|---|---|---|---|---|---|---|")
    for name, path in pipelines:
        nlp = spacy.load(path)
        pairs, texts = entity_groups(DocBin().from_disk(args.train).get_docs(nlp.vocab))
        for test in args.test:
            gold_docs = list(DocBin().from_disk(test).get_docs(nlp.vocab))
            inputs = [
                Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
                for d in gold_docs
            ]
            counts = count(gold_docs, nlp.pipe(inputs, batch_size=64), pairs, texts)
            total_gold = sum(counts[g, "gold"] for g in GROUPS)
            for group in GROUPS:
                gold, predicted = counts[group, "gold"], counts[group, "predicted"]
                p, r, f = prf(counts[group, "correct"], gold, predicted)
                share = gold / total_gold if total_gold else 0.0
                print(f"| {name} | {test.name} | {group} | {100 * share:.1f}% ({gold}) "
                      f"| {100 * p:.2f} | {100 * r:.2f} | {100 * f:.2f} |")  # fmt: skip
            p, r, f = prf(
                sum(counts[g, "correct"] for g in GROUPS),
                total_gold,
                sum(counts[g, "predicted"] for g in GROUPS),
            )
            print(f"| {name} | {test.name} | all | 100% ({total_gold}) "
                  f"| {100 * p:.2f} | {100 * r:.2f} | {100 * f:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
