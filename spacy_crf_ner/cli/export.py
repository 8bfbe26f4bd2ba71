"""``export``: a copy of a pipeline whose crf_ner runs on onnxruntime (no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..export import export_pipeline
from ..onnx_crf import MIN_OPSET
from ._util import ModelArg, OverwriteOpt, VerboseOpt, app, user_errors


@app.command("export")
def export_cli(
    model: ModelArg,
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT", help="The new pipeline directory to write.", show_default=False
        ),
    ],
    int8: Annotated[
        bool, typer.Option("--int8", help="Quantise the weights to int8 (dynamic quantisation).")
    ] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset of the graphs.")] = MIN_OPSET,
    component: Annotated[
        str | None,
        typer.Option(
            "--component", help="The crf_ner component (default: the first).", show_default=False
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write OUTPUT, a spaCy pipeline in which crf_ner (BiLSTM-CRF or transformer-CRF, with
    its transformer) runs on onnxruntime: spacy.load(OUTPUT) needs neither torch nor MODEL.
    The CRF decode is inside the graph; OUTPUT is written only once it has been checked
    against the torch pipeline.
    Needs the onnx extra (pip install "spacy-crf-ner[onnx]")."""
    with user_errors(verbose):
        written = export_pipeline(
            model, output, int8=int8, opset=opset, overwrite=overwrite, component=component
        )
    kind = "int8" if int8 else "float32"
    msg.good(f"Exported {model} to {written} (onnxruntime, {kind}, opset {opset})")
