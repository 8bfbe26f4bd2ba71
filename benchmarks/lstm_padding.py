"""How much padding should the BiLSTM's groups allow? Times ``PackedLSTMModule`` per bound.

``layers._padding_groups`` pads docs of similar length together while a group's padded size
stays within ``waste`` times its tokens. This times the torch module alone, each bound in
turn and round after round (the best round kept), on two workloads: forward + backward over
batches of 6 docs with the lengths of a corpus's first docs (training on CoNLL articles), and
no-grad forward over batches of 256 sentence-length docs (prediction). "one group" pads the
whole batch together. Prints seconds and the ratio to the shipped bound.

    python benchmarks/lstm_padding.py --train /tmp/acc-conll/corpus/eng.train.spacy

(``accuracy.py --corpus conll --out /tmp/acc-conll`` converts CoNLL-2003 into that folder.)
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

BOUNDS = (1.0, 1.1, 1.25, 1.5, 2.0, float("inf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="a DocBin (.spacy) file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=178, help="the LSTM's input width")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size per direction")
    args = parser.parse_args()
    if not args.train.is_file():
        sys.exit(f"lstm_padding.py: no DocBin at {args.train}")

    import spacy
    import torch
    from spacy.tokens import DocBin

    from spacy_crf_ner import layers

    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = layers._make_lstm_module(args.width, args.hidden, 1, 0.0)
    docs = DocBin().from_disk(args.train).get_docs(spacy.blank("en").vocab)
    lengths = [len(doc) for doc in itertools.islice(docs, 120)]
    articles = [lengths[i : i + 6] for i in range(0, len(lengths), 6)]
    rng = random.Random(0)
    sentences = [[max(1, int(rng.lognormvariate(2.6, 0.6))) for _ in range(256)] for _ in range(8)]
    shipped = layers._padding_groups

    def run(batches: list[list[int]], train: bool) -> None:
        module.train(train)
        with torch.set_grad_enabled(train):
            for sizes in batches:
                flat = torch.randn(sum(sizes), args.width, requires_grad=train)
                out = module(flat, torch.tensor(sizes))
                if train:
                    out.sum().backward()

    best = {(w, kind): float("inf") for w in BOUNDS for kind in ("train", "predict")}
    try:
        for _ in range(args.rounds):
            for waste in BOUNDS:
                layers._padding_groups = lambda sizes, w=waste: shipped(sizes, w)
                for kind, batches in (("train", articles), ("predict", sentences)):
                    begin = time.perf_counter()
                    run(batches, kind == "train")
                    best[waste, kind] = min(best[waste, kind], time.perf_counter() - begin)
    finally:
        layers._padding_groups = shipped
    default = shipped.__defaults__[0]
    print(f"# best of {args.rounds} rounds, 1 thread; ratio: seconds / seconds at {default}")
    print("| bound | train s (6 articles x 20) | ratio | predict s (256 sentences x 8) | ratio |")
    print("|---|---|---|---|---|")
    for waste in BOUNDS:
        name = "one group" if waste == float("inf") else f"{waste}"
        t, p = best[waste, "train"], best[waste, "predict"]
        print(
            f"| {name} | {t:.2f} | {t / best[default, 'train']:.2f} | {p:.2f} | "
            f"{p / best[default, 'predict']:.2f} |"
        )


if __name__ == "__main__":
    main()
