"""Convert column-format NER corpora into spaCy ``DocBin`` (``.spacy``) files.

Why not ``spacy convert -c ner``: it recognises only ``-DOCSTART- -X- O O`` document lines
(CoNLL-2003 as shipped has ``-DOCSTART- -X- -X- O``), names outputs after the input's stem
(``eng.train``, ``eng.testa`` and ``eng.testb`` all become ``eng.spacy``), knows only IOB and
BILUO, puts spaces between Chinese characters, and does not say where a tag sequence is broken.

Format read: one token per line; columns separated by ASCII whitespace (spaces or tabs); the
token in the first column and the tag in the last; every token line has the same number of
columns as the file's first token line. Tokens therefore cannot contain spaces. A blank or
whitespace-only line ends a sentence; a line whose first column is ``-DOCSTART-`` starts a
new document and is never a token. Entities never cross a sentence boundary: tags are decoded
per sentence.

Tags: ``O`` and prefix letters are read case-insensitively (``b-per`` is ``B-per``; labels
are kept as written). ``-`` is spaCy's "annotation missing here": the token's entity
annotation is left unset, exactly as spaCy's own readers do, and entities are decoded from
the annotated runs between such tokens; a tag whose entity would run into a ``-`` token
(``- I-PER`` in BIO, ``B-PER -`` in BIOES) is refused, because where that entity starts or
ends is not annotated. A tag with an empty or reserved type (``B-``, ``B-O``, ``I--``) is
refused with ``file:line``: it would create an entity type "O" that training rejects.

Documents: one ``Doc`` per ``-DOCSTART-`` document by default, or ``n_sents`` sentences per
``Doc`` (never across a ``-DOCSTART-``); a file without ``-DOCSTART-`` lines gets
``DEFAULT_N_SENTS`` sentences per ``Doc``. Sentence starts are stored on the tokens.

Annotation-tool exports (Prodigy and doccano JSONL, Label Studio JSON) are read by
``spacy_crf_ner.formats``; ``convert_files`` picks the reader from the file (``fmt="auto"``).

Outputs: every output path is checked before anything is read or written, existing outputs
are refused unless ``overwrite``, and all outputs are written under temporary names and then
renamed, so a failed or interrupted run leaves no partial file and no partial set of files.

``read_column_file`` and ``convert_files`` are the library; the ``convert`` command
(``spacy_crf_ner.cli.convert``) only adds the report.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.tokens import Doc, DocBin, Span
from spacy.util import get_lang_class
from spacy.vocab import Vocab, create_vocab
from tqdm import tqdm
from wasabi import msg

from spacy_crf_ner.formats import FORMATS, AnnotationFile, detect_format, read_annotations
from spacy_crf_ner.loaders import write_all_atomic
from spacy_crf_ner.tags import TagScheme, detect_scheme, get_scheme

DOCSTART = "-DOCSTART-"
"""First column of a document-start line (CoNLL-2003: ``-DOCSTART- -X- -X- O``)."""

DEFAULT_N_SENTS = 10
"""Sentences per Doc for a file without ``-DOCSTART-`` lines (spaCy's advice for NER)."""

NO_SPACE_LANGS = frozenset({"zh", "ja", "th"})
"""Languages whose tokens are joined without spaces (character-level corpora)."""

PROGRESS_MIN_BYTES = 2 * 1024 * 1024
"""Inputs at least this large get a progress bar on stderr (when ``progress`` is None)."""

MAX_SHOWN = 10
"""Problems listed in an error message or report; the rest are counted."""

MISSING = "-"
"""spaCy's tag for "entity annotation missing here" (not "O")."""

INPUT_FORMATS = ("auto", "column", *FORMATS)
"""``convert_files(fmt=...)``: auto picks by suffix and content (column for other suffixes)."""

# A Weibo token is a character followed by its position in a jieba word (``科0``, ``p10``).
# The lazy group keeps at least one character, so a digit character survives (``011``: ``0``).
_POSITION_RE = re.compile(r"(.+?)[0-9]+")

_Token = tuple[str, str, int]
"""(text, tag, 1-based line number)."""
_Sentence = list[_Token]


@dataclass(frozen=True)
class Problem:
    """Something wrong at one line of an input file; prints as ``file:line: message``."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ConversionError(ValueError):
    """A corpus that cannot be converted (as asked); ``problems`` says where."""

    def __init__(self, summary: str, problems: Sequence[Problem] = ()) -> None:
        self.summary = summary
        self.problems = list(problems)
        lines = [summary, *(str(p) for p in self.problems[:MAX_SHOWN])]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"... and {len(self.problems) - MAX_SHOWN} more")
        super().__init__("\n".join(lines))


@dataclass
class ConversionStats:
    """What one input became; the numbers the corpus READMEs publish."""

    docs: int = 0
    sentences: int = 0
    tokens: int = 0
    entities: Counter[str] = field(default_factory=Counter)
    repaired_sequences: int = 0
    repaired_positions: int = 0
    source_documents: int = 0
    empty_documents: int = 0
    missing_tokens: int = 0
    """Tokens tagged ``-``: their entity annotation is left unset."""
    normalised_tags: int = 0
    """Lowercase tags (``b-per``, ``o``) read with an upper-case prefix."""
    skipped_records: dict[str, int] = field(default_factory=dict)
    """Annotation-tool records not converted, by reason (e.g. answer "reject")."""

    @property
    def n_entities(self) -> int:
        return sum(self.entities.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "sentences": self.sentences,
            "tokens": self.tokens,
            "entities": dict(sorted(self.entities.items())),
            "entities_total": self.n_entities,
            "repaired_sequences": self.repaired_sequences,
            "repaired_positions": self.repaired_positions,
            "source_documents": self.source_documents,
            "empty_documents": self.empty_documents,
            "missing_tokens": self.missing_tokens,
            "normalised_tags": self.normalised_tags,
            "skipped_records": dict(sorted(self.skipped_records.items())),
        }


@dataclass
class ConversionResult:
    """The docs read from one input file, how they were read, and what was repaired."""

    path: Path
    docs: list[Doc]
    scheme: str
    scheme_detected: bool
    lang: str
    n_sents: int
    """Sentences per Doc that were used; 0 = one Doc per input document."""
    stats: ConversionStats
    repairs: list[Problem]
    """Invalid tag positions that were repaired (always empty with ``strict``)."""
    all_tokens_end_in_digit: bool
    """Every token ends in an ASCII digit: probably Weibo-style positions (``strip_digit``)."""
    output: Path | None = None
    format: str = "column"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.path),
            "format": self.format,
            "output": None if self.output is None else str(self.output),
            "scheme": self.scheme,
            "scheme_detected": self.scheme_detected,
            "lang": self.lang,
            "sentences_per_doc": self.n_sents,
            **self.stats.to_dict(),
            "repairs": [str(p) for p in self.repairs],
        }


@dataclass
class _Parsed:
    """The raw reading of a file: documents of sentences of tokens."""

    documents: list[list[_Sentence]]
    docstarts: int
    errors: list[Problem]
    all_digit: bool
    normalised: int


def _progress_bar(path: Path, progress: bool | None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, shown for large inputs only, so small runs stay quiet."""
    show = path.stat().st_size >= PROGRESS_MIN_BYTES if progress is None else progress
    return tqdm(disable=not show, leave=False, file=sys.stderr, **kwargs)


def _read_rows(path: Path, *, strip_digit: bool, progress: bool | None) -> _Parsed:
    """Split a file into documents and sentences, collecting malformed lines."""
    documents: list[list[_Sentence]] = []
    current: list[_Sentence] | None = None
    sentence: _Sentence = []
    errors: list[Problem] = []
    n_cols, first_line = 0, 0
    docstarts = 0
    all_digit = True
    normalised = 0

    def end_sentence() -> None:
        nonlocal current, sentence
        if sentence:
            if current is None:
                current = []
                documents.append(current)
            current.append(sentence)
            sentence = []

    size = path.stat().st_size
    with (
        path.open("rb") as file,
        _progress_bar(
            path, progress, total=size, unit="B", unit_scale=True, desc=f"Reading {path.name}"
        ) as bar,
    ):
        pending = 0  # bytes not yet shown; one bar update per line would cost more
        for lineno, raw in enumerate(file, 1):
            pending += len(raw)
            if pending >= 1 << 16:
                bar.update(pending)
                pending = 0
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark
            try:
                # bytes.split() splits at ASCII whitespace only: a full-width space (U+3000)
                # or a no-break space is a token, as in a character-level corpus.
                cols = [col.decode("utf-8") for col in raw.split()]
            except UnicodeDecodeError as err:
                errors.append(Problem(path, lineno, f"not UTF-8 ({err.reason})"))
                continue
            if not cols:
                end_sentence()
                continue
            if cols[0] == DOCSTART:
                end_sentence()
                current = []
                documents.append(current)
                docstarts += 1
                continue
            if len(cols) < 2:
                errors.append(
                    Problem(path, lineno, "1 column: a token line needs the token and a tag")
                )
                continue
            if not n_cols:
                n_cols, first_line = len(cols), lineno
            elif len(cols) != n_cols:
                errors.append(
                    Problem(
                        path,
                        lineno,
                        f"{len(cols)} columns, but the first token line (line {first_line}) "
                        f"has {n_cols}; columns are split at spaces and tabs, so tokens that "
                        "contain spaces are not supported",
                    )
                )
                continue
            text = cols[0]
            if strip_digit:
                match = _POSITION_RE.fullmatch(text)
                if match is None:
                    errors.append(
                        Problem(
                            path,
                            lineno,
                            f"--strip-digit: token {text!r} is not a character followed by "
                            "a position number",
                        )
                    )
                    continue
                text = match.group(1)
            elif not "0" <= text[-1] <= "9":
                all_digit = False
            tag, problem = normalise_tag(cols[-1])
            if problem:
                errors.append(Problem(path, lineno, problem))
                continue
            normalised += tag != cols[-1]
            sentence.append((text, tag, lineno))
        bar.update(pending)
    end_sentence()
    return _Parsed(documents, docstarts, errors, all_digit, normalised)


def normalise_tag(tag: str) -> tuple[str, str | None]:
    """The tag with ``O`` and its prefix letter in upper case, and why it is refused, if it is.

    ``b-per`` -> ``B-per`` (labels keep their case); ``-`` stays (missing annotation).
    Refused: a prefix with an empty type (``B-``) or the type ``O`` or ``-`` (``B-O``), which
    would create an entity type that spaCy rejects when training starts.
    """
    if tag == MISSING:
        return tag, None
    if tag in ("o", "O"):
        return "O", None
    letter, sep, label = tag.partition("-")
    if sep and len(letter) == 1 and letter.isalpha():
        tag = letter.upper() + sep + label
        if not label or label.upper() == "O" or label == MISSING:
            return tag, (
                f"tag {tag!r} has {'no' if not label else 'the reserved'} entity type"
                f"{'' if not label else ' ' + repr(label)}: 'O' and '-' are tags, not types "
                "(write O for outside, - for missing annotation)"
            )
    return tag, None


def _can_start(scheme: TagScheme, tag: str) -> bool:
    """Whether ``tag`` may open a sequence (unknown tags: True, they are reported anyway)."""
    try:
        return bool(scheme.allowed_transitions([tag])[1][0])
    except ValueError:
        return True


def _can_end(scheme: TagScheme, tag: str) -> bool:
    try:
        return bool(scheme.allowed_transitions([tag])[2][0])
    except ValueError:
        return True


def decode_with_missing(
    scheme: TagScheme, tags: Sequence[str]
) -> tuple[list[tuple[int, int, str]], list[int], list[tuple[int, str]], list[tuple[int, str]]]:
    """Decode one sentence whose tags may include ``-`` (missing annotation).

    Returns (spans, missing positions, repairs, errors). Each run of annotated tags between
    ``-`` tokens is decoded on its own (invalid sequences repaired as conlleval does, listed in
    repairs); a tag at the edge of a run that cannot start or end an entity there is an error,
    because the entity would continue into tokens whose annotation is missing.
    """
    n = len(tags)
    missing = [i for i, tag in enumerate(tags) if tag == MISSING]
    spans: list[tuple[int, int, str]] = []
    repairs: list[tuple[int, str]] = []
    errors: list[tuple[int, str]] = []
    pos = 0
    while pos < n:
        if tags[pos] == MISSING:
            pos += 1
            continue
        end = pos
        while end < n and tags[end] != MISSING:
            end += 1
        run = list(tags[pos:end])
        bad: set[int] = set()
        if pos > 0 and not _can_start(scheme, run[0]):
            bad.add(pos)
            errors.append(
                (
                    pos,
                    f"{run[0]!r} follows a '-' (missing) token, so where its entity starts is "
                    f"not annotated ({scheme.name}); tag the whole entity, or mark all of it '-'",
                )
            )
        if end < n and not _can_end(scheme, run[-1]):
            bad.add(end - 1)
            errors.append(
                (
                    end - 1,
                    f"{run[-1]!r} is followed by a '-' (missing) token, so where its entity "
                    f"ends is not annotated ({scheme.name}); tag the whole entity, or mark all "
                    "of it '-'",
                )
            )
        repairs.extend((pos + p, m) for p, m in scheme.validate(run) if pos + p not in bad)
        spans.extend(
            (pos + s, pos + e, label) for s, e, label in scheme.tags_to_spans(run, strict=False)
        )
        pos = end
    errors.sort()
    return spans, missing, repairs, errors


def blank_vocab(lang: str) -> Vocab:
    """The vocab ``spacy.blank(lang)`` has (zh: no jieba/pkuseg needed), built directly.

    ``spacy.blank`` also loads every installed spaCy plugin through entry points (with
    spacy-transformers, torch and transformers: seconds), which a converter does not need.
    """
    try:
        lang_cls = get_lang_class(lang)
    except (ImportError, ValueError) as err:
        message = f"Cannot create a blank spaCy pipeline for --lang {lang!r}: {err}"
        raise ConversionError(message) from err
    return create_vocab(lang_cls.lang, lang_cls.Defaults)


def _make_doc(
    vocab: Vocab,
    sentences: Sequence[_Sentence],
    spans: Sequence[Sequence[tuple[int, int, str]]],
    missing: Sequence[Sequence[int]],
    with_spaces: bool,
) -> Doc:
    """One Doc from sentences, their (sentence-relative) entity spans and missing tokens."""
    words: list[str] = []
    sent_starts: list[bool] = []
    ents: list[tuple[int, int, str]] = []
    unset: list[int] = []
    for sentence, sentence_spans, sentence_missing in zip(sentences, spans, missing, strict=True):
        offset = len(words)
        words.extend(token[0] for token in sentence)
        sent_starts.extend([True] + [False] * (len(sentence) - 1))
        ents.extend((offset + start, offset + end, label) for start, end, label in sentence_spans)
        unset.extend(offset + i for i in sentence_missing)
    n = len(words)
    spaces = [True] * (n - 1) + [False] if with_spaces else [False] * n
    doc = Doc(vocab, words=words, spaces=spaces, sent_starts=sent_starts)
    # default="outside": tokens outside entities are annotated O; "-" tokens stay unset.
    doc.set_ents(
        [Span(doc, s, e, label=label) for s, e, label in ents],
        missing=[Span(doc, i, i + 1) for i in unset],
        default="outside",
    )
    return doc


def read_column_file(
    path: str | Path,
    *,
    lang: str = "en",
    scheme: str | TagScheme | None = None,
    n_sents: int | None = None,
    strict: bool = False,
    strip_digit: bool = False,
    progress: bool | None = None,
    vocab: Vocab | None = None,
) -> ConversionResult:
    """Read one column-format NER file into Docs (see the module docstring for the format).

    ``scheme`` None detects it (``tags.detect_scheme``). ``n_sents`` None: one Doc per
    ``-DOCSTART-`` document, or ``DEFAULT_N_SENTS`` sentences per Doc without them; 0: one
    Doc per document (the whole file without ``-DOCSTART-``). Invalid tag sequences raise
    ConversionError with ``strict``, otherwise they are repaired as conlleval does and listed
    in ``repairs``. Malformed lines (wrong column count, not UTF-8, a token ``strip_digit``
    cannot strip, a tag with an empty or reserved type) and entities that run into a ``-``
    (missing) token always raise. ``progress`` None shows a bar on stderr for large files.
    """
    path = Path(path)
    if n_sents is not None and n_sents < 0:
        raise ValueError(f"n_sents must be >= 0, got {n_sents}")
    tag_scheme = None if scheme is None else get_scheme(scheme)
    parsed = _read_rows(path, strip_digit=strip_digit, progress=progress)
    if parsed.errors:
        raise ConversionError(f"{path}: {len(parsed.errors)} malformed line(s)", parsed.errors)
    sentences = [sentence for document in parsed.documents for sentence in document]
    if not sentences:
        raise ConversionError(f"{path}: no tokens found")
    detected = tag_scheme is None
    if tag_scheme is None:
        tag_scheme = detect_scheme([token[1] for token in s] for s in sentences)

    stats = ConversionStats(source_documents=parsed.docstarts, normalised_tags=parsed.normalised)
    repairs: list[Problem] = []
    errors: list[Problem] = []
    spans: list[list[tuple[int, int, str]]] = []  # per sentence, in file order
    missing: list[list[int]] = []
    for sentence in sentences:
        tags = [token[1] for token in sentence]
        sent_spans, sent_missing, problems, gaps = decode_with_missing(tag_scheme, tags)
        if problems:
            stats.repaired_sequences += 1
            stats.repaired_positions += len({pos for pos, _ in problems})
            repairs.extend(Problem(path, sentence[pos][2], message) for pos, message in problems)
        errors.extend(Problem(path, sentence[pos][2], message) for pos, message in gaps)
        spans.append(sent_spans)
        missing.append(sent_missing)
        stats.missing_tokens += len(sent_missing)
    if errors:
        raise ConversionError(
            f"{path}: {len(errors)} entit{'y runs' if len(errors) == 1 else 'ies run'} into "
            "tokens whose annotation is missing ('-')",
            errors,
        )
    if strict and repairs:
        raise ConversionError(
            f"{path}: {len(repairs)} invalid {tag_scheme.name} tag position(s) in "
            f"{stats.repaired_sequences} sentence(s) (--strict; leave it out to repair them "
            "as conlleval does)",
            repairs,
        )

    group = n_sents if n_sents is not None else (0 if parsed.docstarts else DEFAULT_N_SENTS)
    vocab = vocab if vocab is not None else blank_vocab(lang)
    with_spaces = lang not in NO_SPACE_LANGS
    docs: list[Doc] = []
    first = 0  # index in ``sentences``/``spans`` of the chunk's first sentence
    with _progress_bar(
        path, progress, total=len(sentences), unit=" sents", desc=f"Building {path.name}"
    ) as bar:
        for document in parsed.documents:
            if not document:
                stats.empty_documents += 1
                continue
            step = group or len(document)
            for i in range(0, len(document), step):
                chunk = document[i : i + step]
                doc = _make_doc(
                    vocab,
                    chunk,
                    spans[first : first + len(chunk)],
                    missing[first : first + len(chunk)],
                    with_spaces,
                )
                first += len(chunk)
                docs.append(doc)
                stats.sentences += len(chunk)
                stats.tokens += len(doc)
                stats.entities.update(ent.label_ for ent in doc.ents)
                bar.update(len(chunk))
    stats.docs = len(docs)
    return ConversionResult(
        path=path,
        docs=docs,
        scheme=tag_scheme.name,
        scheme_detected=detected,
        lang=lang,
        n_sents=group,
        stats=stats,
        repairs=repairs,
        all_tokens_end_in_digit=parsed.all_digit and not strip_digit,
    )


def output_path(path: str | Path, output_dir: str | Path) -> Path:
    """``output_dir/<whole input file name>.spacy``: eng.train and eng.testa stay apart."""
    return Path(output_dir) / f"{Path(path).name}.spacy"


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _blocked(path: Path, overwrite: bool) -> str | None:
    """Why ``path`` cannot be written as a file, or None."""
    if path.is_dir():
        return f"{path} is a directory"
    if path.exists() and not overwrite:
        return f"{path} exists (pass --overwrite to replace it)"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{path}: {parent} is a file, not a directory"
            break
    return None


def plan_outputs(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    stats_json: str | Path | None = None,
) -> list[Path]:
    """The output path of every input, all checked before anything is read or written.

    ConversionError lists every problem: an input that is not a file, an output that would
    overwrite an input or another input's output, an output (or ``stats_json``) that is a
    directory, sits under a file, or exists (unless ``overwrite``).
    """
    paths = [Path(p) for p in inputs]
    out_dir = Path(output_dir)
    outputs = [output_path(p, out_dir) for p in paths]
    problems: list[str] = []
    for path in paths:
        if not path.is_file():
            problems.append(f"{path}: not a file")
    if out_dir.exists() and not out_dir.is_dir():
        problems.append(f"--output-dir {out_dir} is a file, not a directory")
    for i, out in enumerate(outputs):
        for path in paths:
            if _same_file(out, path):
                problems.append(f"{paths[i]}: its output {out} is an input file")
        for j in range(i):
            if _same_file(outputs[j], out):
                problems.append(
                    f"{paths[j]} and {paths[i]} would both be written to {out} "
                    "(same file name; convert them into different output directories)"
                )
        if not out_dir.exists() or out_dir.is_dir():
            blocked = _blocked(out, overwrite)
            if blocked and not any(_same_file(out, path) for path in paths):
                problems.append(f"output {blocked}")
    if stats_json is not None:
        stats_path = Path(stats_json)
        for path in [*paths, *outputs]:
            if _same_file(stats_path, path):
                problems.append(f"--stats-json {stats_path} would overwrite {path}")
        blocked = _blocked(stats_path, overwrite)
        if blocked:
            problems.append(f"--stats-json {blocked}")
    if len(problems) == 1:
        raise ConversionError(problems[0])
    if problems:
        raise ConversionError(f"{len(problems)} problems with the paths:\n" + "\n".join(problems))
    return outputs


def write_docbin(docs: Iterable[Doc], path: Path) -> None:
    """Write docs as a DocBin without user data; atomically, so no half-written output."""
    write_all_atomic([(path, docbin_bytes(docs))])


def docbin_bytes(docs: Iterable[Doc]) -> bytes:
    """The serialized DocBin of ``docs``, without user data."""
    return DocBin(docs=docs, store_user_data=False).to_bytes()


def stats_dict(results: Sequence[ConversionResult]) -> dict[str, Any]:
    """The ``--stats-json`` content: one record per input, in the order given."""
    return {"files": [result.to_dict() for result in results]}


def input_format(path: Path, fmt: str = "auto") -> str:
    """The reader for ``path``: ``fmt``, or with "auto" the annotation-tool format that
    ``formats.detect_format`` recognises, else "column" (but never for .json/.jsonl)."""
    if fmt not in INPUT_FORMATS:
        raise ConversionError(
            f"Unknown --format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}"
        )
    if fmt != "auto":
        return fmt
    detected = detect_format(path)
    if detected is None and path.suffix.lower() in (".json", ".jsonl"):
        raise ConversionError(
            f"{path}: cannot tell its format: not a Label Studio export (a JSON list of "
            'tasks) nor Prodigy ("spans") or doccano ("label"/"entities") JSON lines; '
            "pass --format"
        )
    return detected or "column"


def read_annotation_file(
    path: str | Path, fmt: str, *, lang: str = "en", vocab: Vocab | None = None
) -> ConversionResult:
    """Read a Prodigy, doccano or Label Studio export into Docs (``formats.read_annotations``),
    tokenized by ``lang``'s tokenizer where the record has no tokens of its own; every
    misaligned or unusable span raises ConversionError with its record."""
    path = Path(path)
    vocab = vocab if vocab is not None else blank_vocab(lang)
    nlp = get_lang_class(lang)(vocab=vocab)
    read: AnnotationFile = read_annotations(path, fmt, nlp.make_doc)
    if read.problems:
        problems = [Problem(path, number, message) for number, message in read.problems]
        unit = "task" if fmt == "labelstudio" else "line"
        raise ConversionError(
            f"{path}: {len(problems)} problem(s) in the {fmt} records ({unit} numbers below)",
            problems,
        )
    if not read.docs:
        raise ConversionError(
            f"{path}: no {fmt} record to convert ({read.records} read"
            + (f", skipped: {dict(read.skipped)}" if read.skipped else "")
            + ")"
        )
    stats = ConversionStats(
        docs=len(read.docs),
        sentences=len(read.docs),
        tokens=sum(len(doc) for doc in read.docs),
        source_documents=read.records,
        skipped_records=dict(read.skipped),
    )
    for doc in read.docs:
        stats.entities.update(ent.label_ for ent in doc.ents)
    return ConversionResult(
        path=path,
        docs=read.docs,
        scheme="spans",
        scheme_detected=False,
        lang=lang,
        n_sents=1,
        stats=stats,
        repairs=[],
        all_tokens_end_in_digit=False,
        format=fmt,
    )


def convert_files(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    lang: str = "en",
    scheme: str | TagScheme | None = None,
    n_sents: int | None = None,
    strict: bool = False,
    strip_digit: bool = False,
    stats_json: str | Path | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    fmt: str = "auto",
) -> list[ConversionResult]:
    """Convert every input to ``output_dir/<name>.spacy`` (options as in read_column_file).

    ``fmt``: "column", "prodigy", "doccano", "labelstudio", or "auto" (per file, by suffix
    and content). Every output path is checked first and all inputs are read and checked
    before anything is written; the outputs (and ``stats_json``) are then written under
    temporary names and renamed, so a bad file or a failed write leaves no partial set of
    outputs. Existing outputs are refused unless ``overwrite``. Inputs are never modified.
    Returns one result per input.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConversionError("No input files given")
    outputs = plan_outputs(paths, output_dir, overwrite=overwrite, stats_json=stats_json)
    formats = [input_format(path, fmt) for path in paths]
    vocab = blank_vocab(lang)
    results: list[ConversionResult] = []
    failures: list[ConversionError] = []
    for path, path_format in zip(paths, formats, strict=True):
        try:
            if path_format == "column":
                result = read_column_file(
                    path,
                    lang=lang,
                    scheme=scheme,
                    n_sents=n_sents,
                    strict=strict,
                    strip_digit=strip_digit,
                    progress=progress,
                    vocab=vocab,
                )
            else:
                result = read_annotation_file(path, path_format, lang=lang, vocab=vocab)
            results.append(result)
        except ConversionError as err:
            failures.append(err)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise ConversionError(
            "\n".join(f.summary for f in failures),
            [p for f in failures for p in f.problems],
        )
    for result, out in zip(results, outputs, strict=True):
        result.output = out
    items: list[tuple[Path, bytes | str]] = [
        (out, docbin_bytes(result.docs)) for result, out in zip(results, outputs, strict=True)
    ]
    if stats_json is not None:
        text = json.dumps(stats_dict(results), indent=2, ensure_ascii=False) + "\n"
        items.append((Path(stats_json), text))
    write_all_atomic(items)
    return results


def print_report(results: Sequence[ConversionResult]) -> None:
    """What was written, what was repaired, and hints; wasabi on stdout."""
    for result in results:
        stats = result.stats
        how = "detected" if result.scheme_detected else "given"
        grouping = (
            "one Doc per -DOCSTART- document"
            if result.n_sents == 0 and stats.source_documents
            else "one Doc for the whole file"
            if result.n_sents == 0
            else f"{result.n_sents} sentences per Doc"
        )
        read_as = (
            f"{result.scheme} {how}; {grouping}"
            if result.format == "column"
            else f"{result.format} export; one Doc per record"
        )
        msg.good(
            f"{result.path} -> {result.output}: {stats.docs} docs, {stats.sentences} "
            f"sentences, {stats.tokens} tokens, {stats.n_entities} entities ({read_as})"
        )
        if stats.missing_tokens:
            msg.info(
                f"{result.path}: {stats.missing_tokens} token(s) tagged '-' keep missing "
                "entity annotation (not O)"
            )
        if stats.normalised_tags:
            msg.info(
                f"{result.path}: {stats.normalised_tags} lowercase tag(s) read with an "
                "upper-case prefix (b-per -> B-per; labels keep their case)"
            )
        for reason, count in sorted(stats.skipped_records.items()):
            msg.info(f"{result.path}: skipped {count} record(s): {reason}")
        if result.repairs:
            msg.warn(
                f"{result.path}: repaired {stats.repaired_sequences} invalid {result.scheme} "
                f"sequence(s) at {stats.repaired_positions} position(s), as conlleval does "
                "(--strict fails instead)"
            )
            for problem in result.repairs[:MAX_SHOWN]:
                print(f"  {problem}")
            if len(result.repairs) > MAX_SHOWN:
                print(f"  ... and {len(result.repairs) - MAX_SHOWN} more (see --stats-json)")
        if stats.empty_documents:
            msg.warn(f"{result.path}: skipped {stats.empty_documents} empty -DOCSTART- document(s)")
        if result.all_tokens_end_in_digit:
            msg.info(
                f"{result.path}: every token ends in a digit. If these are word-position "
                "digits (Weibo NER: '科0'), convert again with --strip-digit"
            )
    schemes = {result.scheme for result in results}
    if len(schemes) > 1 and any(result.scheme_detected for result in results):
        msg.warn(
            f"The inputs were read with different schemes ({', '.join(sorted(schemes))}); "
            "pass --scheme if they are one corpus"
        )
    names = [result.output.name if result.output else result.path.name for result in results]
    header = ["output", "scheme", "docs", "sentences", "tokens", "entities", "repaired"]
    rows = [
        [
            name,
            r.scheme,
            r.stats.docs,
            r.stats.sentences,
            r.stats.tokens,
            r.stats.n_entities,
            r.stats.repaired_positions,
        ]
        for name, r in zip(names, results, strict=True)
    ]
    msg.table(rows, header=header, divider=True, aligns=("l", "l", "r", "r", "r", "r", "r"))
    labels = sorted({label for r in results for label in r.stats.entities})
    if labels:
        ent_rows = [[label, *(r.stats.entities[label] for r in results)] for label in labels]
        ent_rows.append(["total", *(r.stats.n_entities for r in results)])
        msg.table(
            ent_rows,
            header=["entities", *names],
            divider=True,
            aligns=("l", *("r" for _ in results)),
        )
