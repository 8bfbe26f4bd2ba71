"""Temperature calibration of crf_ner's probabilities on a dev set.

A CRF trained to convergence is over-confident: its entity probabilities are higher than
the fraction of entities that turn out correct. Dividing every CRF score (emissions,
transitions, start and end scores) by one temperature T > 1 softens the distribution without
changing the best path, so the predicted entities, and all F-scores, stay the same.

``python -m spacy_crf_ner calibrate MODEL DEV.spacy [--output DIR]`` runs the pipeline once
over the dev docs, keeps the CRF's emissions, decodes them at each temperature of a grid and
picks the one with the lowest log-loss of "this predicted entity is correct". It prints the
table (log-loss, expected calibration error) and, with ``--output``, writes a copy of the
pipeline with ``temperature`` set; the input pipeline is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy
import typer

from .cli import app

# Reliability bins for the expected calibration error: finer near 1, where most entities are.
RELIABILITY_BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0000001)
DEFAULT_TEMPERATURES = tuple(float(t) for t in numpy.round(numpy.geomspace(0.5, 8.0, 25), 4))


@dataclass
class TemperatureScore:
    temperature: float
    log_loss: float  # mean binary cross-entropy of P(entity correct)
    ece: float  # expected calibration error over RELIABILITY_BINS
    mean_prob: float


@dataclass
class Calibration:
    component: str
    n_docs: int
    n_entities: int  # predicted entities scored
    accuracy: float  # fraction of them that are correct (exact span and label)
    scores: list[TemperatureScore]
    best: TemperatureScore


def expected_calibration_error(
    probs: numpy.ndarray, correct: numpy.ndarray, bins: Sequence[float] = RELIABILITY_BINS
) -> float:
    """Sum over probability bins of |mean probability - fraction correct|, weighted by size."""
    if not len(probs):
        return 0.0
    ece = 0.0
    for low, high in zip(bins[:-1], bins[1:], strict=True):
        inside = (probs >= low) & (probs < high)
        if inside.any():
            ece += inside.mean() * abs(probs[inside].mean() - correct[inside].mean())
    return float(ece)


def binary_log_loss(probs: numpy.ndarray, correct: numpy.ndarray) -> float:
    p = numpy.clip(probs, 1e-12, 1.0 - 1e-12)
    return float(-(correct * numpy.log(p) + (1 - correct) * numpy.log(1 - p)).mean())


def fit_temperature(
    nlp: Any,
    gold_docs: Sequence[Any],
    *,
    component: str | None = None,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    batch_size: int = 128,
) -> Calibration:
    """Score every temperature on ``gold_docs`` and return the table and the best one.

    The components before ``component`` run once (e.g. a transformer), the CRF's emission
    model once per batch; only the CRF's probabilities are recomputed per temperature.
    """
    from .evaluate import token_copy
    from .rank import crf_components

    names = crf_components(nlp)
    if not names:
        raise ValueError("The pipeline has no crf_ner component: nothing to calibrate.")
    if component is None:
        component = names[0]
    elif component not in names:
        raise ValueError(f"'{component}' is not a crf_ner component of the pipeline: {names}")
    if not temperatures or any(not 0.0 < t < math.inf for t in temperatures):
        raise ValueError(f"Temperatures must be positive numbers; got {list(temperatures)}")
    ner = nlp.get_pipe(component)
    upstream = nlp.pipe_names[: nlp.pipe_names.index(component)]
    batches = []  # (docs, emissions, gold entity sets)
    for begin in range(0, len(gold_docs), batch_size):
        gold = gold_docs[begin : begin + batch_size]
        with nlp.select_pipes(enable=upstream):
            docs = list(
                nlp.pipe((token_copy(doc, nlp.vocab) for doc in gold), batch_size=batch_size)
            )
        if not any(len(doc) for doc in docs):
            continue
        sets = [{(e.start, e.end, e.label_) for e in doc.ents} for doc in gold]
        batches.append((docs, ner.model.predict(docs), sets))
    saved = ner.temperature
    scores = []
    try:
        for temperature in temperatures:
            ner.temperature = float(temperature)
            probs, correct = [], []
            for docs, emissions, sets in batches:
                predictions = ner.decode(docs, emissions, scored=True)
                for found, gold in zip(predictions.entity_probs, sets, strict=True):
                    for key, prob in found.items():
                        probs.append(prob)
                        correct.append(key in gold)
            p, c = numpy.asarray(probs, dtype="float64"), numpy.asarray(correct, dtype="float64")
            scores.append(
                TemperatureScore(
                    float(temperature),
                    binary_log_loss(p, c) if len(p) else 0.0,
                    expected_calibration_error(p, c),
                    float(p.mean()) if len(p) else 0.0,
                )
            )
    finally:
        ner.temperature = saved
    if not len(p):
        raise ValueError(
            "The pipeline predicts no entities on these docs: there is nothing to calibrate."
        )
    best = min(scores, key=lambda s: (s.log_loss, abs(math.log(s.temperature))))
    return Calibration(component, len(gold_docs), len(p), float(c.mean()), scores, best)


def save_with_temperature(model: str | Path, output: str | Path, component: str, t: float) -> Path:
    """Write a copy of the pipeline ``model`` whose ``component`` has ``temperature = t``.

    The copy is loaded with a config override, so the new value lands in its config.cfg;
    the source is only read. ``output`` must not exist or be an empty directory.
    """
    import spacy

    source, output = Path(model), Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"Output {output} exists and is not an empty directory")
    if source.exists() and source.resolve() == output.resolve():
        raise FileExistsError(f"Output {output} is the input pipeline: choose another directory")
    nlp = spacy.load(model, config={"components": {component: {"temperature": t}}})
    nlp.to_disk(output)
    return output


@app.command("calibrate")
def calibrate_cli(
    model: Annotated[Path, typer.Argument(help="A trained pipeline directory or package name.")],
    data: Annotated[Path, typer.Argument(help="Gold dev data: a .spacy file or a directory.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write a copy of the pipeline with the fitted T."),
    ] = None,
    component: Annotated[str | None, typer.Option(help="The crf_ner component.")] = None,
    gpu_id: Annotated[int, typer.Option("--gpu-id", "-g", help="GPU id, or -1 for CPU.")] = -1,
) -> None:
    """Fit the temperature of crf_ner's probabilities on gold dev data (entities unchanged)."""
    from wasabi import msg

    from .evaluate import _fail, _use_gpu, load_docbin, load_pipeline

    try:
        _use_gpu(gpu_id)
        nlp = load_pipeline(str(model))
        result = fit_temperature(nlp, load_docbin(data, nlp.vocab), component=component)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(err) from err
    msg.info(
        f"{result.n_entities} predicted entities in {result.n_docs} docs, "
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
    try:
        save_with_temperature(model, output, result.component, best.temperature)
    except FileExistsError as err:
        raise _fail(err) from err
    msg.good(f"Saved the pipeline with temperature {best.temperature:g} to {output}")
