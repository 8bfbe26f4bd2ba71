"""``predict``: the entities of a few texts, with probabilities, as a table."""

from __future__ import annotations

from typing import Annotated

import typer
from wasabi import msg

from ..evaluate import predict_entities
from ._util import GpuIdOpt, ModelArg, VerboseOpt, app, load_pipeline, setup_gpu, user_errors


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@app.command("predict")
def predict_cli(
    model: ModelArg,
    texts: Annotated[list[str], typer.Argument(help="Texts to tag.", show_default=False)],
    gpu_id: GpuIdOpt = -1,
    verbose: VerboseOpt = False,
) -> None:
    """Load a pipeline with spacy.load and print the entities of each text, with the CRF's
    probability of each entity where there is one."""
    with user_errors(verbose):
        setup_gpu(gpu_id)
        nlp = load_pipeline(model)
        found = predict_entities(nlp, texts)
    for text, ents in zip(texts, found, strict=True):
        msg.divider(text if len(text) <= 70 else text[:67] + "...")
        if not ents:
            msg.info("no entities")
            continue
        rows = [
            (e["text"], e["label"], f"{e['start_char']}-{e['end_char']}", _fmt(e["prob"]))
            for e in ents
        ]
        msg.table(rows, header=("entity", "label", "chars", "probability"))
