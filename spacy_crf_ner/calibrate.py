"""Temperature calibration of crf_ner's probabilities on a dev set.

A CRF trained to convergence is over-confident: its entity probabilities are higher than
the fraction of entities that turn out correct. Dividing every CRF score (emissions,
transitions, start and end scores) by one temperature T > 1 softens the distribution without
changing the best path, so the predicted entities, and all F-scores, stay the same.

``fit_temperature`` runs the pipeline once over the dev docs, keeps the CRF's emissions,
decodes them at each temperature of a grid and picks the one with the lowest log-loss of
"this predicted entity is correct". Docs are skipped and predictions ignored by the rules
``evaluate`` uses: a doc without entity annotation is skipped, and a predicted entity on a
token whose annotation is missing is neither right nor wrong. ``save_with_temperature``
writes a copy of the pipeline with ``temperature`` set; the input pipeline is never changed.
The ``calibrate`` command (``spacy_crf_ner.cli.calibrate``) prints the table and saves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from .evaluate import token_copy
from .loaders import load_pipeline, require_crf_component

# Reliability bins for the expected calibration error: finer near 1, where most entities are.
RELIABILITY_BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0000001)
DEFAULT_TEMPERATURES = tuple(float(t) for t in numpy.round(numpy.geomspace(0.5, 8.0, 25), 4))


@dataclass
class TemperatureScore:
    temperature: float
    log_loss: float  # mean binary cross-entropy of P(entity correct)
    ece: float  # expected calibration error over RELIABILITY_BINS
    mean_prob: float


class NoEntityAnnotationError(ValueError):
    """No doc of the dev data has entity annotation: there is nothing to calibrate against."""


@dataclass
class Calibration:
    component: str
    n_docs: int  # docs with entity annotation, the ones scored
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

    Docs without entity annotation are skipped and predictions touching a token with missing
    annotation ignored, as ``evaluate`` does; NoEntityAnnotationError when no doc is left.
    The components before ``component`` run once (e.g. a transformer), the CRF's emission
    model once per batch; only the CRF's probabilities are recomputed per temperature.
    """
    component = require_crf_component(nlp, component)
    if not temperatures or any(not 0.0 < t < math.inf for t in temperatures):
        raise ValueError(f"Temperatures must be positive numbers; got {list(temperatures)}")
    annotated = [doc for doc in gold_docs if doc.has_annotation("ENT_IOB")]
    if not annotated:
        raise NoEntityAnnotationError(
            f"none of the {len(gold_docs)} docs has entity annotation (evaluate skips such "
            "docs too); calibrate needs gold entities"
        )
    ner = nlp.get_pipe(component)
    upstream = nlp.pipe_names[: nlp.pipe_names.index(component)]
    batches = []  # (docs, emissions, gold entity sets, positions with missing annotation)
    for begin in range(0, len(annotated), batch_size):
        gold = annotated[begin : begin + batch_size]
        with nlp.select_pipes(enable=upstream):
            docs = list(
                nlp.pipe((token_copy(doc, nlp.vocab) for doc in gold), batch_size=batch_size)
            )
        if not any(len(doc) for doc in docs):
            continue
        sets = [{(e.start, e.end, e.label_) for e in doc.ents} for doc in gold]
        unknown = [{t.i for t in doc if t.ent_iob == 0} for doc in gold]
        batches.append((docs, ner.model.predict(docs), sets, unknown))
    saved = ner.temperature
    scores = []
    try:
        for temperature in temperatures:
            ner.temperature = float(temperature)
            probs, correct = [], []
            for docs, emissions, sets, unknown in batches:
                predictions = ner.decode(docs, emissions, scored=True)
                for found, gold, missing in zip(
                    predictions.entity_probs, sets, unknown, strict=True
                ):
                    for key, prob in found.items():
                        if missing and not missing.isdisjoint(range(key[0], key[1])):
                            continue  # neither right nor wrong, as in evaluate
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
    return Calibration(component, len(annotated), len(p), float(c.mean()), scores, best)


def save_with_temperature(model: str | Path, output: str | Path, component: str, t: float) -> Path:
    """Write a copy of the pipeline ``model`` whose ``component`` has ``temperature = t``.

    The copy is loaded with a config override, so the new value lands in its config.cfg;
    the source is only read. ``output`` must not exist or be an empty directory.
    """
    output = check_pipeline_output(model, output)
    nlp = load_pipeline(model, config={"components": {component: {"temperature": t}}})
    nlp.to_disk(output)
    return output


def check_pipeline_output(model: str | Path, output: str | Path) -> Path:
    """``output`` must not be the input pipeline, a file, or a non-empty directory."""
    source, output = Path(model), Path(output)
    if source.exists() and source.resolve() == output.resolve():
        raise FileExistsError(f"--output {output} is the input pipeline: choose another directory")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"--output {output} is a file; a pipeline is a directory")
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"--output {output} exists and is not an empty directory")
    return output
