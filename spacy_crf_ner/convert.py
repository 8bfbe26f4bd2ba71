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

Documents: one ``Doc`` per ``-DOCSTART-`` document by default, or ``n_sents`` sentences per
``Doc`` (never across a ``-DOCSTART-``); a file without ``-DOCSTART-`` lines gets
``DEFAULT_N_SENTS`` sentences per ``Doc``. Sentence starts are stored on the tokens.

``read_column_file`` and ``convert_files`` are the library; ``convert_cli`` is the
``python -m spacy_crf_ner convert`` command, which only adds the report.
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
from typing import Annotated, Any

import typer
from spacy.tokens import Doc, DocBin, Span
from spacy.util import get_lang_class
from spacy.vocab import Vocab, create_vocab
from tqdm import tqdm
from wasabi import msg

from spacy_crf_ner.cli import app
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.path),
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
            sentence.append((text, cols[-1], lineno))
        bar.update(pending)
    end_sentence()
    return _Parsed(documents, docstarts, errors, all_digit)


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
    with_spaces: bool,
) -> Doc:
    """One Doc from sentences and their (sentence-relative) entity spans."""
    words: list[str] = []
    sent_starts: list[bool] = []
    ents: list[tuple[int, int, str]] = []
    for sentence, sentence_spans in zip(sentences, spans, strict=True):
        offset = len(words)
        words.extend(token[0] for token in sentence)
        sent_starts.extend([True] + [False] * (len(sentence) - 1))
        ents.extend((offset + start, offset + end, label) for start, end, label in sentence_spans)
    n = len(words)
    spaces = [True] * (n - 1) + [False] if with_spaces else [False] * n
    doc = Doc(vocab, words=words, spaces=spaces, sent_starts=sent_starts)
    # default="outside": tokens outside entities are annotated O, not missing.
    doc.set_ents([Span(doc, s, e, label=label) for s, e, label in ents], default="outside")
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
    cannot strip) always raise. ``progress`` None shows a bar on stderr for large files.
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

    stats = ConversionStats(source_documents=parsed.docstarts)
    repairs: list[Problem] = []
    spans: list[list[tuple[int, int, str]]] = []  # per sentence, in file order
    for sentence in sentences:
        tags = [token[1] for token in sentence]
        problems = tag_scheme.validate(tags)
        if problems:
            stats.repaired_sequences += 1
            stats.repaired_positions += len({pos for pos, _ in problems})
            repairs.extend(Problem(path, sentence[pos][2], message) for pos, message in problems)
        spans.append(tag_scheme.tags_to_spans(tags, strict=False))
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
                doc = _make_doc(vocab, chunk, spans[first : first + len(chunk)], with_spaces)
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


def plan_outputs(inputs: Sequence[str | Path], output_dir: str | Path) -> list[Path]:
    """The output path of every input; ConversionError if any would overwrite an input or
    another input's output."""
    paths = [Path(p) for p in inputs]
    outputs = [output_path(p, output_dir) for p in paths]
    problems: list[str] = []
    for path in paths:
        if not path.is_file():
            problems.append(f"{path}: not a file")
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
    if problems:
        raise ConversionError("Refusing to convert:\n" + "\n".join(problems))
    return outputs


def write_docbin(docs: Iterable[Doc], path: Path) -> None:
    """Write docs as a DocBin without user data; atomically, so no half-written output."""
    data = DocBin(docs=docs, store_user_data=False).to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are private (0600); this one gets the umask's mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stats_dict(results: Sequence[ConversionResult]) -> dict[str, Any]:
    """The ``--stats-json`` content: one record per input, in the order given."""
    return {"files": [result.to_dict() for result in results]}


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
) -> list[ConversionResult]:
    """Convert every input to ``output_dir/<name>.spacy`` (options as in read_column_file).

    All inputs are read and checked before anything is written, so a bad file leaves no
    partial set of outputs. Inputs are never modified. Returns one result per input.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConversionError("No input files given")
    outputs = plan_outputs(paths, output_dir)
    if stats_json is not None:
        for path in [*paths, *outputs]:
            if _same_file(Path(stats_json), path):
                raise ConversionError(f"Refusing to write --stats-json over {path}")
    vocab = blank_vocab(lang)
    results: list[ConversionResult] = []
    failures: list[ConversionError] = []
    for path in paths:
        try:
            results.append(
                read_column_file(
                    path,
                    lang=lang,
                    scheme=scheme,
                    n_sents=n_sents,
                    strict=strict,
                    strip_digit=strip_digit,
                    progress=progress,
                    vocab=vocab,
                )
            )
        except ConversionError as err:
            failures.append(err)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise ConversionError(
            "\n".join(str(f) for f in failures),
            [p for f in failures for p in f.problems],
        )
    for result, out in zip(results, outputs, strict=True):
        write_docbin(result.docs, out)
        result.output = out
    if stats_json is not None:
        stats_path = Path(stats_json)
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        stats_path.write_text(json.dumps(stats_dict(results), indent=2, ensure_ascii=False) + "\n")
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
        msg.good(
            f"{result.path} -> {result.output}: {stats.docs} docs, {stats.sentences} "
            f"sentences, {stats.tokens} tokens, {stats.n_entities} entities "
            f"({result.scheme} {how}; {grouping})"
        )
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


_HELP = (
    "Convert column-format NER files (CoNLL-2003, Resume NER, Weibo NER) to .spacy DocBins, "
    "one <input file name>.spacy per input.\n\n"
    "Token in the first column, tag in the last, columns split at spaces or tabs (tokens "
    "cannot contain spaces). A line whose first column is -DOCSTART- starts a document; blank "
    "or whitespace-only lines end a sentence. Invalid tag sequences are repaired as conlleval "
    "does and listed as file:line (--strict fails instead); a wrong number of columns is "
    "always an error."
)


@app.command("convert", help=_HELP)
def convert_cli(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Column-format files: token first, tag last, separated by spaces or tabs "
            "(tokens cannot contain spaces).",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", "-o", help="Directory for <input file name>.spacy outputs."),
    ],
    lang: Annotated[
        str,
        typer.Option("--lang", "-l", help="spaCy language; zh/ja/th docs have no spaces."),
    ] = "en",
    scheme: Annotated[
        str | None,
        typer.Option(
            "--scheme",
            "-s",
            help="IOB1, IOB2/BIO, BIOES/IOBES, BILUO/BILOU, BMES or BMEWO (default: detected).",
            show_default=False,
        ),
    ] = None,
    n_sents: Annotated[
        int | None,
        typer.Option(
            "--n-sents",
            "-n",
            min=0,
            help="Sentences per Doc, never across -DOCSTART-; 0 = one Doc per document "
            f"(default: one Doc per -DOCSTART- document, {DEFAULT_N_SENTS} without them).",
            show_default=False,
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail on invalid tag sequences instead of repairing them."),
    ] = False,
    strip_digit: Annotated[
        bool,
        typer.Option(
            "--strip-digit",
            help="Remove the trailing position number of each token (Weibo NER: 科0 -> 科).",
        ),
    ] = False,
    stats_json: Annotated[
        Path | None,
        typer.Option("--stats-json", help="Also write the counts as JSON to this file."),
    ] = None,
) -> None:
    """The ``convert`` command: ``convert_files`` plus a report (help text in _HELP)."""
    try:
        scheme_obj = None if scheme is None else get_scheme(scheme)
    except ValueError as err:
        msg.fail(str(err))
        raise typer.Exit(2) from err
    try:
        results = convert_files(
            inputs,
            output_dir,
            lang=lang,
            scheme=scheme_obj,
            n_sents=n_sents,
            strict=strict,
            strip_digit=strip_digit,
            stats_json=stats_json,
        )
    except ConversionError as err:
        msg.fail("Conversion failed; nothing was written", str(err))
        raise typer.Exit(1) from err
    print_report(results)
    if stats_json is not None:
        msg.info(f"Counts written to {stats_json}")
