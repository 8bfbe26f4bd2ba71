"""``calibrate``: fit crf_ner's temperature on gold dev data; optionally save a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..calibrate import (
    NoEntityAnnotationError,
    check_pipeline_output,
    fit_temperature,
    save_with_temperature,
)
from ._util import (
    GoldDataArg,
    GpuIdOpt,
    ModelArg,
    VerboseOpt,
    app,
    fail,
    load_docbin,
    load_pipeline,
    require_crf_component,
    setup_gpu,
    user_errors,
)


@app.command("calibrate")
def calibrate_cli(
    model: ModelArg,
    data: GoldDataArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write a copy of the pipeline with the fitted temperature to this new or "
            "empty directory (the input pipeline is only read).",
        ),
    ] = None,
    component: Annotated[
        str | None,
        typer.Option(
            "--component", help="The crf_ner component (default: the first).", show_default=False
        ),
    ] = None,
    gpu_id: GpuIdOpt = -1,
    verbose: VerboseOpt = False,
) -> None:
    """Fit the temperature of crf_ner's probabilities on gold dev data (entities unchanged).

    Docs without entity annotation are skipped, as evaluate skips them; with none left the
    command fails, naming the file.
    """
    with user_errors(verbose):
        if not data.exists():
            raise FileNotFoundError(f"Data file not found: {data}")
        if output is not None:
            check_pipeline_output(model, output)
        setup_gpu(gpu_id)
        nlp = load_pipeline(model)
        component = require_crf_component(nlp, component)
        docs = load_docbin(data, nlp.vocab)
    try:
        result = fit_temperature(nlp, docs, component=component)
    except NoEntityAnnotationError as err:
        fail(f"{data}: {err}", verbose=verbose)
    except ValueError as err:
        fail(f"{data}: {err}", verbose=verbose)
    msg.info(
        f"{result.n_entities} predicted entities in {result.n_docs} annotated docs, "
        f"{100 * result.accuracy:.1f}% correct"
    )
    rows = [
        (
            f"{s.temperature:g}" + (" *" if s is result.best else ""),
            f"{s.log_loss:.4f}",
            f"{s.ece:.4f}",
            f"{s.mean_prob:.3f}",
        )
        for s in result.scores
    ]
    msg.table(rows, header=("temperature", "log-loss", "ECE", "mean p"), divider=True)
    current = next((s for s in result.scores if s.temperature == 1.0), None)
    best = result.best
    msg.good(
        f"Best temperature {best.temperature:g}: log-loss {best.log_loss:.4f}, ECE "
        f"{best.ece:.4f}"
        + (f" (T=1: {current.log_loss:.4f}, {current.ece:.4f})" if current else "")
    )
    override = (
        f'{{"components": {{"{result.component}": {{"temperature": {best.temperature:g}}}}}}}'
    )
    if output is None:
        msg.text(f"Use it: spacy.load({str(model)!r}, config={override})")
        return
    with user_errors(verbose):
        save_with_temperature(model, output, result.component, best.temperature)
    msg.good(f"Saved the pipeline with temperature {best.temperature:g} to {output}")
