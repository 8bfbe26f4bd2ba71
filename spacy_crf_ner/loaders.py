"""Loading pipelines and data, and writing outputs, with errors that name the path.

Shared by the library functions (``evaluate``, ``rank``, ``calibrate``) and the command line
(``spacy_crf_ner.cli``, which re-exports them from ``cli/_util.py``). Kept free of typer, so
that using the library never imports the CLI. Every error is an ``OSError`` or a
``ValueError`` whose message names the file or setting: the CLI prints it as one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

TEXT_SUFFIXES = (".spacy", ".txt", ".jsonl")
"""What ``read_texts`` reads: gold docs, one text per line, or JSON lines with "text"."""


class NotAPipelineError(ValueError):
    """A path that exists but is not a loadable spaCy pipeline directory."""


class NoCRFComponentError(ValueError):
    """A pipeline without a crf_ner component, for a command that needs its probabilities."""


def setup_gpu(gpu_id: int) -> None:
    """Allocate on GPU ``gpu_id`` (before loading, so the weights land there); -1 is the CPU."""
    if gpu_id < -1:
        raise ValueError(f"--gpu-id must be -1 (CPU) or a GPU number, got {gpu_id}")
    if gpu_id >= 0:
        try:
            spacy.require_gpu(gpu_id)
        except ValueError as err:  # e.g. "Cannot use GPU, CuPy is not installed"
            raise ValueError(f"--gpu-id {gpu_id}: {err} (use -1 for the CPU)") from err


def load_pipeline(model: str | Path, *, config: dict[str, Any] | None = None) -> Language:
    """Load a pipeline from a directory or an installed package, naming the path on failure."""
    path = Path(model)
    overrides = config or {}
    if not path.exists():
        if isinstance(model, str) and spacy.util.is_package(model):
            return spacy.load(model, config=overrides)
        raise FileNotFoundError(
            f"Pipeline not found: {model} (no such directory, and no installed pipeline "
            "package of that name)"
        )
    if not path.is_dir():
        raise NotAPipelineError(f"Not a spaCy pipeline: {path} is a file, not a directory")
    if not (path / "config.cfg").is_file():
        raise NotAPipelineError(
            f"Not a spaCy pipeline: {path} has no config.cfg (pass the directory that "
            "spacy train wrote, e.g. training/model-best)"
        )
    try:
        return spacy.load(path, config=overrides)
    except OSError as err:  # e.g. no meta.json, unreadable weights
        raise NotAPipelineError(f"Could not load a spaCy pipeline from {path}: {err}") from err


def crf_components(nlp: Language) -> list[str]:
    """Names of the pipeline's crf_ner components (the ones that compute probabilities)."""
    from .pipe import CRFEntityRecognizer

    return [name for name, pipe in nlp.pipeline if isinstance(pipe, CRFEntityRecognizer)]


def require_crf_component(nlp: Language, component: str | None = None) -> str:
    """The crf_ner component to use: ``component``, or the first; errors list the choices."""
    names = crf_components(nlp)
    if not names:
        pipes = ", ".join(nlp.pipe_names) or "no components"
        raise NoCRFComponentError(
            f"The pipeline has no crf_ner component (pipes: {pipes}); this command needs "
            "the CRF's probabilities"
        )
    if component is None:
        return names[0]
    if component not in names:
        raise NoCRFComponentError(
            f"--component {component!r} is not a crf_ner component of the pipeline "
            f"(crf_ner components: {', '.join(names)})"
        )
    return component


def load_docbin(path: str | Path, vocab: Vocab) -> list[Doc]:
    """Read the docs of a ``.spacy`` DocBin, or of every ``.spacy`` file in a directory (as
    spaCy's corpus reader does), with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Data file not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.spacy") if p.is_file())
        if not files:
            raise ValueError(f"Data directory has no .spacy files: {path}")
        return [doc for file in files for doc in load_docbin(file, vocab)]
    if not path.is_file():
        raise ValueError(f"Data path is not a file: {path} (expected a .spacy DocBin)")
    try:
        doc_bin = DocBin().from_disk(path)
    except Exception as err:  # msgpack/zlib errors say nothing about which file
        raise ValueError(f"Could not read {path} as a .spacy DocBin: {err}") from err
    return list(doc_bin.get_docs(vocab))


def check_limit(limit: int | None, option: str = "--limit") -> None:
    """``limit`` must be None (no limit) or at least 1: a negative slice would drop docs."""
    if limit is not None and limit < 1:
        raise ValueError(f"{option} must be at least 1, got {limit}")


def read_texts(path: str | Path, vocab: Vocab, limit: int | None = None) -> list[str | Doc]:
    """Texts (``.txt``: one per non-empty line; ``.jsonl``: the "text" field) or gold docs
    (``.spacy`` file or directory) to run a pipeline on, at most ``limit`` of them."""
    check_limit(limit)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".spacy" or path.is_dir():
        return list(load_docbin(path, vocab)[:limit])
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"Unsupported input {path}: expected .spacy, .txt or .jsonl")
    texts: list[str | Doc] = []
    try:
        with path.open(encoding="utf8") as lines:
            for number, line in enumerate(lines, start=1):
                if limit is not None and len(texts) >= limit:
                    break
                if not line.strip():
                    continue
                if suffix == ".txt":
                    texts.append(line.rstrip("\r\n"))
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: invalid JSON ({err})") from err
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f'{path}, line {number}: no string "text" field')
                texts.append(record["text"])
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 ({err.reason})") from err
    return texts


def check_output_file(path: str | Path, *, overwrite: bool = False, option: str = "") -> Path:
    """Refuse an output file that is a directory, that exists (unless ``overwrite``), or whose
    folder cannot be created; called before any work, so a bad path fails fast."""
    path = Path(path)
    what = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise IsADirectoryError(f"Output {what} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"Output {what} exists; pass --overwrite to replace it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"Output {what}: {parent} is a file, not a directory")
            break
    return path


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed: same folder, hidden, this process's."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write to a temporary name and rename, so an interrupted run leaves no partial file.

    Not tempfile.mkstemp: its files are private (0600); this one gets the umask's mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        tmp.write_bytes(data.encode("utf8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_all_atomic(items: Sequence[tuple[Path, bytes | str]]) -> None:
    """Write several files all or nothing: every temporary file first, then the renames."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_path(path)
            written.append((tmp, path))
            tmp.write_bytes(data.encode("utf8") if isinstance(data, str) else data)
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
