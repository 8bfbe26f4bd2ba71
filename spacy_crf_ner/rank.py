"""Uncertainty ranking: the documents a trained crf_ner is least sure about, as an annotation queue.

``rank_documents`` runs the pipeline with entity probabilities switched on and returns one
record per document, most uncertain first; ``run_rank`` (the ``rank`` command) writes them as
JSON lines, or as Prodigy or doccano tasks (``spacy_crf_ner.formats``) with the model's
entities as pre-annotations, so the queue can be imported into the annotation tool directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from .formats import to_doccano, to_prodigy
from .loaders import (
    check_limit,
    check_output_file,
    crf_components,
    load_pipeline,
    read_texts,
    require_crf_component,
    setup_gpu,
    write_atomic,
)

RANK_BY = ("path", "entity")
QUEUE_FORMATS = ("jsonl", "prodigy", "doccano")


def uncertainty(doc: Doc, by: str) -> float:
    """1 - P(decoded tag sequence) (``path``), or 1 - the least probable entity (``entity``)."""
    if by == "path":
        return 1.0 - float(doc._.crf_path_prob)
    probs = [ent._.crf_prob for ent in doc.ents if ent._.crf_prob is not None]
    return 1.0 - min(probs) if probs else 0.0


def rank_with_docs(
    nlp: Language, inputs: Iterable[str | Doc], *, by: str = "path", batch_size: int = 64
) -> list[tuple[dict[str, Any], Doc]]:
    """(record, predicted doc) of each text or doc, sorted by uncertainty, highest first."""
    if by not in RANK_BY:
        raise ValueError(f"--by must be one of {', '.join(RANK_BY)}; got {by!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    require_crf_component(nlp)
    pipes = [nlp.get_pipe(name) for name in crf_components(nlp)]
    saved = [pipe.entity_probs for pipe in pipes]
    for pipe in pipes:
        pipe.entity_probs = True
    ranked = []
    try:
        texts = [item if isinstance(item, str) else item.text for item in inputs]
        for index, doc in enumerate(nlp.pipe(texts, batch_size=batch_size)):
            record = {
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
            ranked.append((record, doc))
    finally:
        for pipe, value in zip(pipes, saved, strict=True):
            pipe.entity_probs = value
    ranked.sort(key=lambda pair: (-pair[0]["uncertainty"], pair[0]["index"]))
    return ranked


def rank_documents(
    nlp: Language, inputs: Iterable[str | Doc], *, by: str = "path", batch_size: int = 64
) -> list[dict[str, Any]]:
    """Score each text or doc and return the records sorted by uncertainty, highest first."""
    return [record for record, _ in rank_with_docs(nlp, inputs, by=by, batch_size=batch_size)]


def queue_lines(ranked: list[tuple[dict[str, Any], Doc]], fmt: str = "jsonl") -> list[str]:
    """The JSON lines of the queue: our records, or Prodigy or doccano tasks."""
    if fmt not in QUEUE_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(QUEUE_FORMATS)}; got {fmt!r}")
    convert = {
        "jsonl": lambda record, doc: record,
        "prodigy": to_prodigy,
        "doccano": to_doccano,
    }[fmt]
    return [json.dumps(convert(record, doc), ensure_ascii=False) for record, doc in ranked]


def run_rank(
    model: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    by: str = "path",
    fmt: str = "jsonl",
    limit: int | None = None,
    gpu_id: int = -1,
    batch_size: int = 64,
    overwrite: bool = False,
) -> int:
    """What the ``rank`` command does; returns the number of documents written.

    Settings and the output path are checked before the pipeline is loaded; the queue is
    written atomically, so a failed run leaves no partial file.
    """
    if by not in RANK_BY:
        raise ValueError(f"--by must be one of {', '.join(RANK_BY)}; got {by!r}")
    if fmt not in QUEUE_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(QUEUE_FORMATS)}; got {fmt!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    check_limit(limit)
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"Input file not found: {data}")
    output = check_output_file(output, overwrite=overwrite, option="--output")
    setup_gpu(gpu_id)
    nlp = load_pipeline(model)
    require_crf_component(nlp)
    ranked = rank_with_docs(nlp, read_texts(data, nlp.vocab, limit), by=by, batch_size=batch_size)
    lines = queue_lines(ranked, fmt)
    write_atomic(output, "".join(line + "\n" for line in lines))
    return len(lines)
