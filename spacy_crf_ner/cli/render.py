"""``render``: a displaCy page of the predicted entities, with their probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..evaluate import run_render
from ._util import GpuIdOpt, LimitOpt, ModelArg, OverwriteOpt, VerboseOpt, app, user_errors


@app.command("render")
def render_cli(
    model: ModelArg,
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help=".spacy DocBin, .txt (one text per line) or .jsonl ('text').",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")],
    limit: LimitOpt = None,
    gpu_id: GpuIdOpt = -1,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Render the predicted entities as a displaCy HTML page; crf_ner entities show their
    probability in the label (e.g. "PER 0.97")."""
    with user_errors(verbose):
        n_docs = run_render(
            model, input_path, output, limit=limit, gpu_id=gpu_id, overwrite=overwrite
        )
    msg.good(f"Rendered {n_docs} docs to {output}")
