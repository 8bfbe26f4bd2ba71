"""How much of a crf_ner training step is the CRF? Profiles ``nlp.update`` on real batches.

Trains the pipeline of a config for a number of steps on a ``.spacy`` corpus and accumulates
the wall-clock time of the whole ``nlp.update`` call and, inside it, of the CRF loss (forward
algorithm, gold score and their backward: ``spacy_crf_ner.crf_batch.crf_loss``); prints both and
the CRF's share. The same for prediction (``crf_decode`` inside ``nlp.pipe``).

    python benchmarks/profile_step.py configs/bilstm_crf.cfg /tmp/bench-conll/corpus/eng.train.spacy
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    import spacy
    import torch
    from spacy.tokens import DocBin
    from spacy.training import Example
    from spacy.util import load_config, minibatch

    from spacy_crf_ner import chars, crf_batch, pipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64, help="docs per update")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spent = {"crf_loss": 0.0, "crf_decode": 0.0, "char_cnn": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            begin = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - begin

        return wrapper

    pipe.crf_loss = timed("crf_loss", crf_batch.crf_loss)
    pipe.crf_decode_with_confidence = timed("crf_decode", crf_batch.crf_decode_with_confidence)
    words_forward = chars._char_words_forward

    def timed_char_words(model, docs, is_train):
        """The character word encoder's forward and, through its callback, its backward."""
        outputs, backprop = timed("char_cnn", words_forward)(model, docs, is_train)
        return outputs, timed("char_cnn", backprop)

    # CharCNN() and CharLSTM() look it up when the model is built.
    chars._char_words_forward = timed_char_words

    config = load_config(args.config, interpolate=True)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    docs = list(DocBin().from_disk(args.data).get_docs(nlp.vocab))
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    optimizer = nlp.initialize(lambda: examples[:500])
    batches = list(minibatch(examples, args.batch_size))
    update_seconds, words = 0.0, 0
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        if step == 5:  # warm-up done
            spent["crf_loss"] = spent["char_cnn"] = 0.0
            update_seconds, words = 0.0, 0
        begin = time.perf_counter()
        nlp.update(batch, sgd=optimizer, drop=0.1)
        update_seconds += time.perf_counter() - begin
        words += sum(len(eg.reference) for eg in batch)
    train_cnn = spent["char_cnn"]
    spent["char_cnn"] = 0.0
    texts = [eg.reference.text for eg in examples[:2000]]
    begin = time.perf_counter()
    list(nlp.pipe(texts, batch_size=256))
    predict_seconds = time.perf_counter() - begin
    n_words = sum(len(eg.reference) for eg in examples[:2000])
    print(f"# {args.config} on {args.data}, {args.threads} thread(s)")
    print(
        f"training: {args.steps - 5} updates of {args.batch_size} docs, {update_seconds:.2f} s "
        f"({words / update_seconds:.0f} words/s); CRF loss + gradient {spent['crf_loss']:.2f} s "
        f"= {100 * spent['crf_loss'] / update_seconds:.1f}% of the step; character CNN "
        f"{train_cnn:.2f} s = {100 * train_cnn / update_seconds:.1f}%"
    )
    print(
        f"prediction: {n_words} words in {predict_seconds:.2f} s ({n_words / predict_seconds:.0f} "
        f"words/s); CRF decoding {spent['crf_decode']:.2f} s = "
        f"{100 * spent['crf_decode'] / predict_seconds:.1f}%; character CNN "
        f"{spent['char_cnn']:.2f} s = {100 * spent['char_cnn'] / predict_seconds:.1f}%"
    )


if __name__ == "__main__":
    main()
