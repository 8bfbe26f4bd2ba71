"""``evaluate``: spaCy's scorer and seqeval side by side, scores.json and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..evaluate import CONFUSION_PLOT_FILE, F1_PLOT_FILE, SCORES_FILE, format_table, run_evaluation
from ._util import BatchSizeOpt, GoldDataArg, GpuIdOpt, ModelArg, VerboseOpt, app, user_errors


@app.command("evaluate")
def evaluate_cli(
    model: ModelArg,
    data: GoldDataArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Directory for scores.json, f1_per_type.png, confusion.png (replaced if there).",
        ),
    ] = None,
    gpu_id: GpuIdOpt = -1,
    batch_size: BatchSizeOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score entities with spaCy's scorer and seqeval side by side; write scores and plots."""
    with user_errors(verbose):
        results = run_evaluation(model, data, output, gpu_id=gpu_id, batch_size=batch_size)
    counts = results["n_entities"]
    msg.info(
        f"{results['n_docs']} docs, {results['n_tokens']} tokens, {counts['gold']} gold and "
        f"{counts['predicted']} predicted entities"
    )
    print(format_table(results))
    wps = results["words_per_second"]
    msg.text(f"Speed: {wps:,.0f} words/s" if wps else "Speed: -")
    if output is not None:
        msg.good(f"Wrote {SCORES_FILE}, {F1_PLOT_FILE} and {CONFUSION_PLOT_FILE} to {output}")
