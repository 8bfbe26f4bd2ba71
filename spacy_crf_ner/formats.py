"""Annotation-tool formats: read Prodigy, doccano and Label Studio exports; write rank queues.

Readers (used by ``convert``), one ``Doc`` per record, entities from character offsets:

* Prodigy JSONL: ``{"text", "spans": [{"start", "end", "label"}], "tokens"?, "answer"?}``.
  With ``tokens`` (``{"text", "start", "end", "ws"?}``) the Doc has exactly those tokens;
  otherwise the text is tokenized by the language's tokenizer.
* doccano JSONL: ``{"text", "label": [[start, end, label], ...]}`` or (doccano >= 1.7)
  ``{"text", "entities": [{"start_offset", "end_offset", "label"}]}``.
* Label Studio JSON: ``[{"data": {"text"}, "annotations": [{"result": [{"value":
  {"start", "end", "labels": [label]}}]}]}]``; cancelled annotations are ignored, the first
  remaining one is used, and ``predictions`` (pre-annotations) never are.

A record whose ``answer`` is "reject" or "ignore" is skipped and counted. Tokens outside the
spans are annotated "O" (the record is taken as fully annotated). A span whose offsets are
not on token boundaries, lie outside the text, overlap another span, or carry an unusable
label is a problem reported with its record number, text and span; nothing is dropped
silently, and the caller refuses to write anything while there are problems.

Writers (used by ``rank --format``): ``to_prodigy`` and ``to_doccano`` turn a ranked record
into a task those tools import directly, with the model's entities as pre-annotations and
the probabilities in ``meta``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

FORMATS = ("prodigy", "doccano", "labelstudio")
"""The annotation-tool formats ``read_annotations`` reads."""

SKIPPED_ANSWERS = ("reject", "ignore")
_RESERVED_LABELS = ("O", "-")
_SNIPPET = 60


@dataclass
class AnnotationFile:
    """What one export became: docs, the records skipped (by reason) and the problems."""

    format: str
    docs: list[Doc]
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)
    """(line or task number, message) of every record that cannot be converted."""


def _snippet(text: str) -> str:
    return repr(text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "...")


def detect_format(path: Path) -> str | None:
    """ "labelstudio" for a JSON list of tasks, "prodigy"/"doccano" for JSON lines with
    ``spans``/``label``/``entities``; None when the file is none of these."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        return None
    try:
        with path.open(encoding="utf8") as stream:
            if suffix == ".json":
                head = stream.read(4096).lstrip()
                return "labelstudio" if head.startswith("[") else None
            for line in stream:
                if line.strip():
                    record = json.loads(line)
                    break
            else:
                return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    if "spans" in record:
        return "prodigy"
    if "label" in record or "entities" in record:
        return "doccano"
    return None


def _jsonl_records(path: Path, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) of every non-blank line; bad JSON is a problem."""
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                problems.append((number, f"not UTF-8 ({err.reason})"))
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                problems.append((number, f"invalid JSON ({err.msg} at column {err.colno})"))


def _label_problem(label: object) -> str | None:
    if not isinstance(label, str) or not label.strip():
        return f"label {label!r} is not a non-empty string"
    if label in _RESERVED_LABELS:
        return f"label {label!r} is reserved ('O' and '-' are tags, not entity types)"
    if any(ch.isspace() for ch in label):
        return f"label {label!r} contains whitespace"
    return None


def _prodigy_doc(record: dict[str, Any], vocab: Vocab) -> Doc | str:
    """A Doc with the record's own tokens, or a message saying why they cannot be used."""
    text = record["text"]
    tokens = record["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        return '"tokens" is not a list of objects'
    words, spaces = [], []
    for i, token in enumerate(tokens):
        start, end = token.get("start"), token.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or "text" not in token:
            return f"token {i} has no integer start/end or no text"
        if text[start:end] != token["text"]:
            return f"token {i} {token['text']!r} is not the text at {start}-{end}"
        following = tokens[i + 1]["start"] if i + 1 < len(tokens) else len(text)
        ws = token.get("ws", following > end)
        words.append(token["text"])
        spaces.append(bool(ws))
    doc = Doc(vocab, words=words, spaces=spaces)
    if doc.text != text:
        return "the tokens and their whitespace do not spell the text"
    return doc


def _entities(doc: Doc, spans: list[tuple[Any, Any, Any]]) -> tuple[list[Span], list[str]]:
    """Spans for (start, end, label) character offsets, and the problems of the others."""
    text = doc.text
    found: list[Span] = []
    problems: list[str] = []
    for start, end, label in spans:
        where = f"span {start}-{end} {label!r}"
        bad_label = _label_problem(label)
        if bad_label:
            problems.append(f"{where}: {bad_label}")
            continue
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            problems.append(f"{where}: offsets not within the text (length {len(text)})")
            continue
        span = doc.char_span(start, end, label=label, alignment_mode="strict")
        if span is None:
            surrounding = text[max(0, start - 10) : end + 10]
            hint = (
                "; it starts or ends with whitespace"
                if text[start:end] != text[start:end].strip()
                else ""
            )
            problems.append(
                f"{where} {text[start:end]!r} (in ...{surrounding!r}...) does not start and "
                f"end on token boundaries{hint}"
            )
            continue
        found.append(span)
    found.sort(key=lambda s: (s.start, s.end))
    for prev, cur in zip(found, found[1:], strict=False):
        if cur.start < prev.end:
            problems.append(
                f"spans {prev.start_char}-{prev.end_char} {prev.label_!r} and "
                f"{cur.start_char}-{cur.end_char} {cur.label_!r} overlap"
            )
    return found, problems


def _spans_of(record: dict[str, Any], fmt: str) -> list[tuple[Any, Any, Any]] | str:
    """(start, end, label) of every span of a Prodigy or doccano record, or a problem."""
    if fmt == "prodigy":
        if "spans" not in record:
            return 'no "spans" field (a Prodigy ner_manual record has one, empty or not)'
        spans = record.get("spans") or []
        if not isinstance(spans, list) or not all(isinstance(s, dict) for s in spans):
            return '"spans" is not a list of objects'
        return [(s.get("start"), s.get("end"), s.get("label")) for s in spans]
    if "entities" in record and "label" not in record:
        ents = record["entities"] or []
        if not isinstance(ents, list) or not all(isinstance(e, dict) for e in ents):
            return '"entities" is not a list of objects'
        return [(e.get("start_offset"), e.get("end_offset"), e.get("label")) for e in ents]
    if "label" not in record:
        return 'no "label" or "entities" field (a doccano record has one, empty or not)'
    labels = record.get("label") or []
    if not isinstance(labels, list) or not all(
        isinstance(x, list | tuple) and len(x) == 3 for x in labels
    ):
        return '"label" is not a list of [start, end, label]'
    return [tuple(x) for x in labels]  # type: ignore[misc]


def _record_doc(
    text: Any,
    spans: list[tuple[Any, Any, Any]],
    make_doc: Callable[[str], Doc],
    own_doc: Doc | None,
) -> Doc | list[str]:
    doc = own_doc if own_doc is not None else make_doc(text)
    found, problems = _entities(doc, spans)
    if problems:
        return problems
    doc.set_ents(found, default="outside")
    return doc


def _read_jsonl(path: Path, fmt: str, make_doc: Callable[[str], Doc]) -> AnnotationFile:
    result = AnnotationFile(fmt, [])
    for number, record in _jsonl_records(path, result.problems):
        result.records += 1
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            result.problems.append((number, 'record has no string "text" field'))
            continue
        text = record["text"]
        answer = record.get("answer", "accept")
        if answer in SKIPPED_ANSWERS:
            result.skipped[f'answer "{answer}"'] += 1
            continue
        if answer != "accept":
            result.problems.append((number, f"answer {answer!r} is not accept, reject or ignore"))
            continue
        spans = _spans_of(record, fmt)
        if isinstance(spans, str):
            result.problems.append((number, f"text {_snippet(text)}: {spans}"))
            continue
        own = None
        if fmt == "prodigy" and record.get("tokens"):
            own = _prodigy_doc(record, make_doc("").vocab)
            if isinstance(own, str):
                result.problems.append((number, f"text {_snippet(text)}: {own}"))
                continue
        doc = _record_doc(text, spans, make_doc, own)
        if isinstance(doc, list):
            result.problems.extend((number, f"text {_snippet(text)}: {p}") for p in doc)
            continue
        result.docs.append(doc)
    return result


def _task_text(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("text"), str):
        return data["text"]
    strings = [v for v in data.values() if isinstance(v, str)]
    return strings[0] if len(strings) == 1 else None


def _read_labelstudio(path: Path, make_doc: Callable[[str], Doc]) -> AnnotationFile:
    result = AnnotationFile("labelstudio", [])
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        result.problems.append((0, f"not UTF-8 ({err.reason})"))
        return result
    except json.JSONDecodeError as err:
        result.problems.append((err.lineno, f"invalid JSON ({err.msg})"))
        return result
    if not isinstance(tasks, list):
        result.problems.append((0, "expected a JSON list of tasks (Label Studio's JSON export)"))
        return result
    for number, task in enumerate(tasks, 1):
        result.records += 1
        where = f"task {number}"
        if isinstance(task, dict) and "id" in task:
            where += f" (id {task['id']})"
        text = _task_text(task.get("data")) if isinstance(task, dict) else None
        if text is None:
            result.problems.append((number, f'{where}: no text in "data"'))
            continue
        annotations = [
            a
            for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        if not annotations:
            result.skipped["not annotated or cancelled"] += 1
            continue
        if len(annotations) > 1:
            result.skipped["further annotations of a task (the first is used)"] += (
                len(annotations) - 1
            )
        spans: list[tuple[Any, Any, Any]] = []
        bad = ""
        for item in annotations[0].get("result") or []:
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, dict) or "labels" not in value:
                continue  # choices, relations, ...: not entities
            labels = value["labels"]
            if not isinstance(labels, list) or len(labels) != 1:
                bad = f"span {value.get('start')}-{value.get('end')} has labels {labels!r}"
                bad += " (exactly one label per entity is needed)"
                break
            spans.append((value.get("start"), value.get("end"), labels[0]))
        if bad:
            result.problems.append((number, f"{where}: text {_snippet(text)}: {bad}"))
            continue
        doc = _record_doc(text, spans, make_doc, None)
        if isinstance(doc, list):
            result.problems.extend((number, f"{where}: text {_snippet(text)}: {p}") for p in doc)
            continue
        result.docs.append(doc)
    return result


def read_annotations(path: str | Path, fmt: str, make_doc: Callable[[str], Doc]) -> AnnotationFile:
    """Read a Prodigy, doccano or Label Studio export (see the module docstring).

    ``make_doc`` tokenizes a text (e.g. ``nlp.make_doc``). Problems are returned, not
    raised, so that the caller can report every one of them at once.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"Unknown annotation format {fmt!r}; expected one of {FORMATS}")
    if fmt == "labelstudio":
        return _read_labelstudio(path, make_doc)
    return _read_jsonl(path, fmt, make_doc)


# --------------------------------------------------------------------------- writers


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "uncertainty": record["uncertainty"],
        "path_prob": record["path_prob"],
        "index": record["index"],
        "entity_probs": [
            {"start": e["start"], "end": e["end"], "label": e["label"], "prob": e["prob"]}
            for e in record["entities"]
        ],
    }


def to_prodigy(record: dict[str, Any], doc: Doc) -> dict[str, Any]:
    """A Prodigy ner_manual task: the doc's tokens, its entities as spans, probabilities in meta."""
    tokens = [
        {
            "text": t.text,
            "start": t.idx,
            "end": t.idx + len(t),
            "id": t.i,
            "ws": bool(t.whitespace_),
        }
        for t in doc
    ]
    by_chars = {(t.idx, t.idx + len(t)): t.i for t in doc}
    starts = {start: i for (start, _), i in by_chars.items()}
    ends = {end: i for (_, end), i in by_chars.items()}
    spans = [
        {
            "start": e["start"],
            "end": e["end"],
            "label": e["label"],
            "token_start": starts[e["start"]],
            "token_end": ends[e["end"]],
        }
        for e in record["entities"]
    ]
    return {"text": record["text"], "tokens": tokens, "spans": spans, "meta": _meta(record)}


def to_doccano(record: dict[str, Any], doc: Doc | None = None) -> dict[str, Any]:
    """A doccano sequence-labelling line: ``label`` pre-annotations, probabilities in meta."""
    labels = [[e["start"], e["end"], e["label"]] for e in record["entities"]]
    return {"text": record["text"], "label": labels, "meta": _meta(record)}
