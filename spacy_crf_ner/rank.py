"""Uncertainty ranking: the documents a trained crf_ner is least sure about, as an annotation queue.

``python -m spacy_crf_ner rank MODEL INPUT --output queue.jsonl`` runs the pipeline with entity
probabilities switched on and writes one JSON object per document, most uncertain first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli import app

RANK_BY = ("path", "entity")


def uncertainty(doc: Any, by: str) -> float:
    """1 - P(decoded tag sequence) (``path``), or 1 - the least probable entity (``entity``)."""
    if by == "path":
        return 1.0 - float(doc._.crf_path_prob)
    probs = [ent._.crf_prob for ent in doc.ents if ent._.crf_prob is not None]
    return 1.0 - min(probs) if probs else 0.0


def crf_components(nlp: Any) -> list[str]:
    from .pipe import CRFEntityRecognizer

    return [name for name, pipe in nlp.pipeline if isinstance(pipe, CRFEntityRecognizer)]


def rank_documents(
    nlp: Any, inputs: Iterable[Any], *, by: str = "path", batch_size: int = 64
) -> list[dict[str, Any]]:
    """Score each text or doc and return the records sorted by uncertainty, highest first."""
    if by not in RANK_BY:
        raise ValueError(f"--by must be one of {RANK_BY}; got {by!r}")
    names = crf_components(nlp)
    if not names:
        raise ValueError("The pipeline has no crf_ner component: nothing to rank by.")
    pipes = [nlp.get_pipe(name) for name in names]
    saved = [pipe.entity_probs for pipe in pipes]
    for pipe in pipes:
        pipe.entity_probs = True
    records = []
    try:
        texts = [item if isinstance(item, str) else item.text for item in inputs]
        for index, doc in enumerate(nlp.pipe(texts, batch_size=batch_size)):
            records.append(
                {
                    "index": index,
                    "text": doc.text,
                    "uncertainty": round(uncertainty(doc, by), 6),
                    "path_prob": round(float(doc._.crf_path_prob), 6),
                    "entities": [
                        {
                            "start": ent.start_char,
                            "end": ent.end_char,
                            "label": ent.label_,
                            "text": ent.text,
                            "prob": round(float(ent._.crf_prob), 6),
                        }
                        for ent in doc.ents
                    ],
                }
            )
    finally:
        for pipe, value in zip(pipes, saved, strict=True):
            pipe.entity_probs = value
    records.sort(key=lambda r: (-r["uncertainty"], r["index"]))
    return records


@app.command("rank")
def rank_cli(
    model: Annotated[str, typer.Argument(help="A trained pipeline with a crf_ner component.")],
    data: Annotated[Path, typer.Argument(help=".spacy, .txt (one text per line) or .jsonl")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    by: Annotated[str, typer.Option(help="path: 1 - P(best path); entity: 1 - min P(entity)")] = (
        "path"
    ),
    limit: Annotated[int | None, typer.Option(help="Only the first N inputs.")] = None,
) -> None:
    """Write the inputs sorted by the model's uncertainty (most uncertain first) as JSONL."""
    from wasabi import msg

    from .evaluate import load_pipeline, read_render_input

    nlp = load_pipeline(model)
    try:
        records = rank_documents(nlp, read_render_input(data, nlp.vocab, limit), by=by)
    except (FileNotFoundError, ValueError) as err:
        msg.fail(str(err), exits=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    msg.good(f"Wrote {len(records)} documents to {output}, most uncertain first (by {by})")
