"""``rank``: the documents the model is least sure about, as an annotation queue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..rank import QUEUE_FORMATS, RANK_BY, run_rank
from ._util import (
    GpuIdOpt,
    LimitOpt,
    ModelArg,
    OverwriteOpt,
    VerboseOpt,
    app,
    user_errors,
)


@app.command("rank")
def rank_cli(
    model: ModelArg,
    data: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help=".spacy, .txt (one text per line) or .jsonl ('text').",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    by: Annotated[
        str,
        typer.Option(
            "--by", help=f"{' or '.join(RANK_BY)}: 1 - P(best path), or 1 - min P(entity)."
        ),
    ] = "path",
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help=f"{', '.join(QUEUE_FORMATS)}: our records, or tasks Prodigy (ner_manual) or "
            "doccano import directly, with the model's entities pre-annotated and the "
            "probabilities in 'meta'.",
        ),
    ] = "jsonl",
    limit: LimitOpt = None,
    gpu_id: GpuIdOpt = -1,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Docs per batch.")] = 64,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write the inputs sorted by the model's uncertainty (most uncertain first) as JSONL."""
    with user_errors(verbose):
        n_docs = run_rank(
            model,
            data,
            output,
            by=by,
            fmt=fmt,
            limit=limit,
            gpu_id=gpu_id,
            batch_size=batch_size,
            overwrite=overwrite,
        )
    msg.good(f"Wrote {n_docs} documents to {output}, most uncertain first (by {by}, {fmt})")
