"""Command line: ``python -m spacy_crf_ner <command>``.

Each command lives in the module that does the work and registers itself on ``app``; ``main``
imports those modules, so ``--help`` lists every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="spacy-crf-ner",
    help="Corpus conversion, evaluation and confidence tools for the crf_ner component.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("predict")
def predict_cli(
    model: Annotated[Path, typer.Argument(help="A trained pipeline directory or package name.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to tag.")],
) -> None:
    """Load a pipeline with spacy.load and print the entities of each text."""
    import spacy
    from wasabi import msg

    nlp = spacy.load(model)
    for _, pipe in nlp.pipeline:  # show each entity's probability where the CRF can give it
        if hasattr(pipe, "entity_probs"):
            pipe.entity_probs = True
    for doc in nlp.pipe(texts):
        msg.divider(doc.text if len(doc.text) <= 70 else doc.text[:67] + "...")
        if not doc.ents:
            msg.info("no entities")
        rows = []
        for ent in doc.ents:
            prob = ent._.get("crf_prob") if ent.has_extension("crf_prob") else None
            rows.append((ent.text, ent.label_, f"{ent.start_char}-{ent.end_char}", _fmt(prob)))
        if rows:
            msg.table(rows, header=("entity", "label", "chars", "probability"))


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def main() -> None:
    # Imported for their side effect of registering commands on ``app``.
    from spacy_crf_ner import calibrate, convert, evaluate, rank  # noqa: F401

    app()
