"""Annotate a corpus: run a trained pipeline over many documents, resumably, on one machine
(worker processes) or on a Ray cluster (Ray Data).

Why it is built this way:

* **Shards are a pure function of the inputs and ``shard_size``.** Every non-blank line of a
  ``.txt``/``.jsonl`` input and every doc of a ``.spacy`` input is one *position*; positions
  are numbered over the inputs in order, and shard ``k`` holds positions
  ``[k * shard_size, (k + 1) * shard_size)``. A rerun maps to the same shards, and both
  engines write the same bytes.
* **Exactly once.** Only the main process writes; a shard is written to a temporary name and
  renamed when complete, and then recorded as done in ``manifest.json`` (also written
  atomically). A rerun skips the shards the manifest lists and redoes all others, so after
  any interruption the union of the shards holds every document exactly once, in input order.
* **The manifest refuses a changed rerun**: other model files, other input files (sizes and
  hashes) or other output settings stop the run unless ``restart`` is passed.
* **Bad records never vanish**: an invalid JSON line, a missing or non-string ``text`` or
  undecodable bytes become a line of ``errors.jsonl`` (file and line) and are counted.
* **Workers only return entities** (start, end, label, probability); the main process builds
  the records, so the output does not depend on the engine or the number of workers.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# ``.loaders`` (spaCy, and through Thinc torch: seconds) is imported where it is used, so that
# the Ray engine's input reader, which imports this module, starts in a fraction of a second.

ENGINES = ("local", "ray")
OUTPUT_FORMATS = ("jsonl", "spacy")
INPUT_SUFFIXES = (".txt", ".jsonl", ".spacy")
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
MANIFEST_VERSION = 1
RAY_EXTRA = 'pip install "spacy-crf-ner[distributed]"'

Entity = tuple[int, int, str, float | None]
"""(start char, end char, label, probability or None): what a worker returns per entity."""


# ------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, its kind (suffix without .gz), and what the manifest
    records to recognise it on a rerun."""

    path: Path
    kind: str
    size: int
    sha256: str
    positions: int

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "positions": self.positions,
        }


@dataclass
class Position:
    """One position of the inputs: a document (``text`` set) or a bad record (``error`` set)."""

    index: int
    file: str
    line: int
    text: str | None = None
    doc_id: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def input_kind(path: Path) -> str | None:
    """``.txt``, ``.jsonl`` or ``.spacy`` (also gzipped: ``x.jsonl.gz``), else None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in INPUT_SUFFIXES else None


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """The input files, in the order given: files, globs (sorted) and directories (their
    supported files, recursively, sorted). Each file once; an input that matches nothing
    is an error (a typo must not silently annotate less)."""
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and input_kind(p))
            if not found:
                raise ValueError(
                    f"Input directory {path} has no .txt, .jsonl or .spacy files (or .gz)"
                )
        elif path.is_file():
            if input_kind(path) is None:
                raise ValueError(
                    f"Unsupported input {path}: expected .txt, .jsonl or .spacy (or .gz)"
                )
            found = [path]
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True))
            found = [p for p in found if p.is_file() and input_kind(p)]
            if not found:
                raise FileNotFoundError(f"Input pattern {text} matches no .txt/.jsonl/.spacy file")
        else:
            raise FileNotFoundError(f"Input file not found: {path}")
        files.extend(found)
    if not files:
        raise ValueError("No inputs given")
    return list(dict.fromkeys(p.resolve() for p in files))


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def _read_docbin(path: Path) -> list[Any]:
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    try:
        with _open_binary(path) as stream:
            data = stream.read()
        return list(DocBin().from_bytes(data).get_docs(Vocab()))
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"Could not read {path} as a .spacy DocBin: {err}") from err
    except Exception as err:  # msgpack/zlib errors say nothing about which file
        raise ValueError(f"Could not read {path} as a .spacy DocBin: {err}") from err


def scan_input(path: Path) -> InputFile:
    """Hash the file and count its positions (one pass over the bytes)."""
    kind = input_kind(path) or ""
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for block in iter(lambda: raw.read(1 << 20), b""):
            digest.update(block)
    if kind == ".spacy":
        positions = len(_read_docbin(path))
    else:
        try:
            with _open_binary(path) as stream:
                positions = sum(1 for line in stream if line.strip())
        except (OSError, EOFError) as err:  # e.g. a truncated .gz
            raise ValueError(f"Could not read {path}: {err}") from err
    return InputFile(path, kind, path.stat().st_size, digest.hexdigest(), positions)


def parse_line(raw: bytes, kind: str) -> tuple[str | None, Any, dict[str, Any], str | None]:
    """(text, id, other fields, error) of one non-blank input line."""
    try:
        line = raw.decode("utf8")
    except UnicodeDecodeError as err:
        return None, None, {}, f"not UTF-8 ({err.reason} at byte {err.start})"
    line = line.rstrip("\r\n")
    if kind == ".txt":
        return line, None, {}, None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, None, {}, f"invalid JSON ({err.msg} at column {err.colno})"
    if not isinstance(record, dict):
        return None, None, {}, f"not a JSON object ({type(record).__name__})"
    if "text" not in record:
        return None, None, {}, 'no "text" field'
    text = record.pop("text")
    if not isinstance(text, str):
        return None, None, {}, f'"text" is not a string ({type(text).__name__})'
    doc_id = record.pop("id", None)
    return text, doc_id, record, None


def iter_positions(files: list[InputFile], start: int = 0) -> Iterator[Position]:
    """Every position from ``start`` on, in input order, streaming (a DocBin is read whole)."""
    offset = 0
    for item in files:
        if offset + item.positions <= start:
            offset += item.positions
            continue
        name = str(item.path)
        if item.kind == ".spacy":
            for number, doc in enumerate(_read_docbin(item.path), start=1):
                index = offset + number - 1
                if index >= start:
                    doc_id = doc.user_data.get("id") if doc.user_data else None
                    yield Position(index, name, number, doc.text, doc_id)
        else:
            index = offset
            with _open_binary(item.path) as stream:
                for number, raw in enumerate(stream, start=1):
                    if not raw.strip():
                        continue
                    if index >= start:
                        text, doc_id, extra, error = parse_line(raw, item.kind)
                        yield Position(index, name, number, text, doc_id, extra, error)
                    index += 1
        offset += item.positions


# ---------------------------------------------------------------------- records, shards


def shard_name(shard: int, fmt: str) -> str:
    return f"shard-{shard:05d}.{fmt}"


def make_record(position: Position, entities: list[Entity]) -> dict[str, Any]:
    """The output record: id, text, the input's other fields, entities (``rank``'s schema:
    start, end, label, text, and prob when entity probabilities are on)."""
    assert position.text is not None
    record: dict[str, Any] = {
        "id": position.index if position.doc_id is None else position.doc_id,
        "index": position.index,
        "text": position.text,
    }
    for key, value in position.extra.items():
        record.setdefault(key, value)
    ents = []
    for start, end, label, prob in entities:
        ent: dict[str, Any] = {
            "start": start,
            "end": end,
            "label": label,
            "text": position.text[start:end],
        }
        if prob is not None:
            ent["prob"] = round(prob, 6)
        ents.append(ent)
    record["entities"] = ents
    return record


def error_record(position: Position) -> dict[str, Any]:
    return {"file": position.file, "line": position.line, "index": position.index,
            "error": position.error}  # fmt: skip


def doc_entities(doc: Any, with_probs: bool) -> list[Entity]:
    """A predicted doc's entities as plain tuples (what workers send back)."""
    out: list[Entity] = []
    for ent in doc.ents:
        prob = None
        if with_probs and ent.has_extension("crf_prob") and ent._.crf_prob is not None:
            prob = float(ent._.crf_prob)
        out.append((ent.start_char, ent.end_char, ent.label_, prob))
    return out


class Annotator:
    """The pipeline, loaded once per worker (process or Ray actor), that turns texts into
    entity tuples. Loaded where it runs, never pickled (spaCy #13506)."""

    def __init__(self, model: str, *, gpu_id: int = -1, entity_probs: bool = False,
                 batch_size: int | None = None) -> None:  # fmt: skip
        from .loaders import crf_components, load_pipeline, setup_gpu
        from .threads import inference_threads

        threads = inference_threads()
        if threads:
            import torch

            torch.set_num_threads(threads)
        setup_gpu(gpu_id)
        self.nlp = load_pipeline(model)
        self.entity_probs = entity_probs
        self.batch_size = batch_size
        if entity_probs:
            for name in crf_components(self.nlp):
                self.nlp.get_pipe(name).entity_probs = True

    def annotate(self, texts: list[str]) -> list[list[Entity]]:
        return [
            doc_entities(doc, self.entity_probs)
            for doc in self.nlp.pipe(texts, batch_size=self.batch_size)
        ]


# ----------------------------------------------------------------------------- manifest


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_model(model: str | Path) -> dict[str, Any]:
    """The model's path, meta and a hash over its files (which a rerun must match)."""
    from .loaders import NotAPipelineError

    path = Path(model)
    if not path.exists():
        import spacy

        if isinstance(model, str) and spacy.util.is_package(model):
            path = spacy.util.get_package_path(model)
        else:
            raise FileNotFoundError(
                f"Pipeline not found: {model} (no such directory, and no installed pipeline "
                "package of that name)"
            )
    if not path.is_dir() or not (path / "config.cfg").is_file():
        raise NotAPipelineError(
            f"Not a spaCy pipeline: {path} (pass the directory that spacy train wrote, "
            "e.g. training/model-best)"
        )
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode("utf8") + b"\0")
        digest.update(file_digest(file).encode("ascii"))
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf8")) if meta_file.is_file() else {}
    keep = ("lang", "name", "version", "spacy_version", "pipeline")
    return {
        "path": str(path.resolve()),
        "sha256": digest.hexdigest(),
        "meta": {k: meta[k] for k in keep if k in meta},
    }


def shard_ranges(files: list[InputFile], shard: int, shard_size: int) -> list[dict[str, Any]]:
    """Which positions of which input files a shard holds (first and last, 1-based)."""
    lo, hi = shard * shard_size, (shard + 1) * shard_size
    ranges, offset = [], 0
    for item in files:
        a, b = max(lo, offset), min(hi, offset + item.positions)
        if a < b:
            ranges.append({"input": str(item.path), "first": a - offset + 1, "last": b - offset})
        offset += item.positions
    return ranges


def check_output_dir(output: Path, identity: dict[str, Any], restart: bool) -> dict[str, Any]:
    """The manifest to continue from: a fresh one, or the existing one if the model, inputs
    and settings are the same. Refuses a folder of someone else's files."""
    manifest_path = output / MANIFEST
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file, not a directory")
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"Could not read {manifest_path}: {err}") from err
        changed = [key for key in ("model", "inputs", "settings") if old.get(key) != identity[key]]
        if old.get("model", {}).get("sha256") == identity["model"]["sha256"]:
            changed = [k for k in changed if k != "model"]  # moved, not changed
        if not changed:
            old["model"] = identity["model"]
            return old
        if not restart:
            raise ValueError(
                f"{output} holds a run with other {' and '.join(changed)} "
                f"({manifest_path}); pass --restart to discard its shards and start over, "
                "or choose another --output"
            )
        remove_run(output, old)
    elif output.is_dir() and any(output.iterdir()):
        raise FileExistsError(
            f"--output {output} is not empty and has no {MANIFEST}: choose a new or empty folder"
        )
    return {**identity, "version": MANIFEST_VERSION, "done": {}}


def remove_run(output: Path, manifest: dict[str, Any]) -> None:
    """Delete what an earlier run wrote (its shards, errors, manifest), nothing else."""
    for pattern in ("shard-*.jsonl", "shard-*.spacy", ".shard-*.tmp", ERRORS, MANIFEST):
        for path in output.glob(pattern):
            path.unlink()


# ------------------------------------------------------------------------------ running


@dataclass
class Summary:
    """What a run did (this run's work and the totals over all shards)."""

    output: Path
    docs: int = 0
    errors: int = 0
    shards: int = 0
    shards_skipped: int = 0
    docs_this_run: int = 0
    entities: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Where this run's time went, in seconds: ``engine_start`` (starting Ray; 0 for local),
    ``first_shard`` (from then until the first shard was written: workers start, load the
    pipeline and annotate one shard), ``steady`` (from then until the last shard was written,
    over ``steady_docs`` docs: the per-document rate) and ``engine_stop``; for Ray also
    ``workers_used`` (actor processes that returned blocks) and ``busiest_worker_share``."""

    @property
    def docs_per_second(self) -> float:
        return self.docs_this_run / self.seconds if self.seconds else 0.0


@dataclass
class Settings:
    """Everything ``annotate`` takes besides the model, inputs and output."""

    engine: str = "local"
    workers: int = 1
    batch_size: int | None = None
    gpu_id: int = -1
    gpus_per_worker: float = 0.0
    fmt: str = "jsonl"
    entity_probs: bool = False
    shard_size: int = 10_000
    restart: bool = False
    ray_address: str | None = None
    progress: bool = True
    chunk_size: int = 256

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.fmt not in OUTPUT_FORMATS:
            raise ValueError(
                f"--format must be one of {', '.join(OUTPUT_FORMATS)}; got {self.fmt!r}"
            )
        for name, value in (("--workers", self.workers), ("--shard-size", self.shard_size)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.gpu_id < -1:
            raise ValueError(f"--gpu-id must be -1 (CPU) or a GPU number, got {self.gpu_id}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.engine == "local" and self.ray_address:
            raise ValueError("--ray-address needs --engine ray")


ShardBatches = Iterator[tuple[int, list[Position]]]
ShardResults = Iterator[tuple[int, list[Position], list[list[Entity]]]]
Runner = Callable[[str, list[InputFile], set[int], Settings, dict[str, float]], ShardResults]
"""An engine: (model path, input files, done shards, settings, phases to fill in) →
(shard, its positions, the entities of its docs) for every pending shard, in shard order."""


def pending_shards(files: list[InputFile], settings: Settings, done: set[int]) -> ShardBatches:
    """(shard, positions) of each shard not done yet, in one streaming pass over the inputs
    from the first pending shard on (positions of done shards are skipped)."""
    size = settings.shard_size
    total = sum(item.positions for item in files)
    todo = [k for k in range(-(-total // size)) if k not in done]
    if not todo:
        return
    current, positions = todo[0], []
    for position in iter_positions(files, todo[0] * size):
        shard = position.index // size
        if shard in done:
            continue
        if shard != current:
            yield current, positions
            current, positions = shard, []
        positions.append(position)
    if positions:
        yield current, positions


def annotate(
    model: str | Path,
    inputs: Iterable[str | Path],
    output: str | Path,
    settings: Settings | None = None,
    *,
    runner: Runner | None = None,
) -> Summary:
    """Annotate ``inputs`` with ``model`` into numbered shards under ``output``, resuming a
    run there that was interrupted; see the module docstring for the guarantees."""
    from .loaders import write_atomic

    settings = settings or Settings()
    settings.check()
    began = time.perf_counter()
    output = Path(output)
    paths = expand_inputs(inputs)
    model_info = describe_model(model)
    if settings.engine == "ray":
        require_ray()
    files = [scan_input(path) for path in paths]
    identity = {
        "model": model_info,
        "inputs": [item.describe() for item in files],
        "settings": {
            "format": settings.fmt,
            "entity_probs": settings.entity_probs,
            "shard_size": settings.shard_size,
        },
    }
    manifest = check_output_dir(output, identity, settings.restart)
    total = sum(item.positions for item in files)
    n_shards = -(-total // settings.shard_size)
    manifest["shards"] = n_shards
    manifest["run"] = {
        "engine": settings.engine,
        "workers": settings.workers,
        "batch_size": settings.batch_size,
        "gpu_id": settings.gpu_id,
        "gpus_per_worker": settings.gpus_per_worker,
    }
    output.mkdir(parents=True, exist_ok=True)
    # Temporary files of an interrupted run: partial shards, a manifest or errors.jsonl
    # being written (write_atomic's hidden names).
    for pattern in (".shard-*.tmp", f".{MANIFEST}.*.tmp", f".{ERRORS}.*.tmp"):
        for stale in output.glob(pattern):
            stale.unlink()
    # A done shard whose file is gone (deleted, or on storage that lost it) is redone.
    for key in [k for k, info in manifest["done"].items() if not (output / info["file"]).is_file()]:
        del manifest["done"][key]
    done = {int(k) for k in manifest["done"]}
    write_atomic(output / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    summary = Summary(output, shards=n_shards, shards_skipped=len(done))
    remaining = total - sum(manifest["done"][str(k)]["positions"] for k in done)

    bar = _progress(remaining, settings.progress)
    writer = ShardWriter(output, settings, model_info["path"])
    phases: dict[str, float] = {"engine_start": 0.0, "engine_stop": 0.0}
    run = runner or (run_local if settings.engine == "local" else run_ray)
    first_written = last_written = None
    steady_docs = 0
    try:
        engine_began = time.perf_counter()
        for shard, positions, entities in run(str(model_info["path"]), files, done, settings,
                                              phases):  # fmt: skip
            info = writer.write(shard, positions, entities)
            info["ranges"] = shard_ranges(files, shard, settings.shard_size)
            manifest["done"][str(shard)] = info
            write_atomic(output / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
            summary.docs_this_run += info["docs"]
            last_written = time.perf_counter()
            if first_written is None:
                first_written = last_written
            else:
                steady_docs += info["docs"]
            if bar is not None:
                bar.update(len(positions))
    finally:
        if bar is not None:
            bar.close()
    if first_written is not None and last_written is not None:
        phases["first_shard"] = first_written - engine_began - phases["engine_start"]
        phases["steady"] = last_written - first_written
        phases["steady_docs"] = steady_docs
    summary.phases = phases
    summary.seconds = time.perf_counter() - began
    for info in manifest["done"].values():
        summary.docs += info["docs"]
        summary.errors += len(info["errors"])
        summary.entities.update(info["entities"])
    if len(manifest["done"]) == n_shards:
        errors = [
            e for k in sorted(manifest["done"], key=int) for e in manifest["done"][k]["errors"]
        ]
        write_atomic(
            output / ERRORS, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors)
        )
        manifest["summary"] = {
            "docs": summary.docs,
            "errors": summary.errors,
            "entities": dict(sorted(summary.entities.items())),
        }
        write_atomic(output / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    return summary


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


class ShardWriter:
    """Writes one complete shard: a temporary name, then ``os.replace``."""

    def __init__(self, output: Path, settings: Settings, model_path: str) -> None:
        self.output = output
        self.settings = settings
        self.model_path = model_path
        self._nlp: Any = None

    def write(self, shard: int, positions: list[Position], entities: list[list[Entity]]) -> dict:
        docs = [p for p in positions if p.error is None]
        if len(entities) != len(docs):
            raise RuntimeError(f"shard {shard}: {len(docs)} docs but {len(entities)} results")
        labels: Counter = Counter(label for ents in entities for _, _, label, _ in ents)
        name = shard_name(shard, self.settings.fmt)
        if self.settings.fmt == "jsonl":
            data: bytes = "".join(
                json.dumps(make_record(p, ents), ensure_ascii=False) + "\n"
                for p, ents in zip(docs, entities, strict=True)
            ).encode("utf8")
        else:
            data = self._docbin(docs, entities)
        path = self.output / name
        tmp = self.output / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return {
            "file": name,
            "positions": len(positions),
            "docs": len(docs),
            "first_index": positions[0].index if positions else None,
            "last_index": positions[-1].index if positions else None,
            "entities": dict(sorted(labels.items())),
            "errors": [error_record(p) for p in positions if p.error is not None],
        }

    def _docbin(self, docs: list[Position], entities: list[list[Entity]]) -> bytes:
        """Docs tokenised by the model's own tokenizer, with the predicted entities."""
        from spacy.tokens import DocBin

        if self._nlp is None:
            import spacy

            config = spacy.util.load_config(Path(self.model_path) / "config.cfg")
            self._nlp = spacy.load(self.model_path, exclude=list(config["nlp"]["pipeline"]))
        doc_bin = DocBin(store_user_data=True)
        for position, ents in zip(docs, entities, strict=True):
            doc = self._nlp.make_doc(position.text)
            spans = [doc.char_span(s, e, label=label, alignment_mode="expand")
                     for s, e, label, _ in ents]  # fmt: skip
            doc.ents = [span for span in spans if span is not None]
            doc.user_data["id"] = position.index if position.doc_id is None else position.doc_id
            doc.user_data["index"] = position.index
            if self.settings.entity_probs:
                doc.user_data["entity_probs"] = [[s, e, label, p] for s, e, label, p in ents]
            doc_bin.add(doc)
        return doc_bin.to_bytes()


# --------------------------------------------------------------------------- local engine

_WORKER: Annotator | None = None


def _worker_annotate(model: str, options: dict[str, Any], texts: list[str]) -> list:
    """In a worker process: load the pipeline on the first call, then annotate."""
    global _WORKER
    if _WORKER is None:
        _WORKER = Annotator(model, **options)
    return _WORKER.annotate(texts)


def _chunks(shard: int, positions: list[Position], size: int) -> Iterator[list[str]]:
    texts = [p.text for p in positions if p.error is None]
    for i in range(0, len(texts), size):
        yield texts[i : i + size]  # type: ignore[misc]


def run_local(model: str, files: list[InputFile], done: set[int], settings: Settings,
              phases: dict[str, float]) -> ShardResults:  # fmt: skip
    """Annotate shard by shard: in this process (one worker) or in worker processes that each
    load the pipeline once; at most two shards of texts in flight (memory stays bounded)."""
    shards = pending_shards(files, settings, done)
    options = {
        "gpu_id": settings.gpu_id,
        "entity_probs": settings.entity_probs,
        "batch_size": settings.batch_size,
    }
    if settings.workers == 1:
        annotator = None  # loaded for the first pending shard: a finished run loads nothing
        for shard, positions in shards:
            annotator = annotator or Annotator(model, **options)
            texts = [p.text for p in positions if p.error is None]
            yield shard, positions, annotator.annotate(texts)  # type: ignore[arg-type]
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # CUDA cannot be used in a forked child; fork is otherwise fastest (threads.py makes it safe).
    method = "spawn" if settings.gpu_id >= 0 else None
    context = multiprocessing.get_context(method)
    size = settings.chunk_size
    with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
        pending: deque = deque()  # (shard, positions, [futures]) in input order
        limit = 2 * settings.workers

        def in_flight() -> int:
            return sum(len(futures) for _, _, futures in pending)

        def drain(keep: int):
            # The next shard is submitted before the oldest is collected and written, so the
            # workers do not wait while this process writes a shard and reads the next one.
            # A negative ``keep`` drains everything (the end of the input).
            while pending and (
                keep < 0 or len(pending) > keep or (len(pending) > 1 and in_flight() > keep)
            ):
                shard, positions, futures = pending[0]
                results: list = []
                for future in futures:
                    results.extend(future.result())
                pending.popleft()
                yield shard, positions, results

        for shard, positions in shards:
            futures = [pool.submit(_worker_annotate, model, options, chunk)
                       for chunk in _chunks(shard, positions, size)]  # fmt: skip
            pending.append((shard, positions, futures))
            yield from drain(limit)
        yield from drain(-1)


# ----------------------------------------------------------------------------- ray engine


def require_ray() -> Any:
    """Ray Data, or an ImportError that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"--engine ray needs Ray Data, which is not installed: {RAY_EXTRA}"
        ) from err
    return ray


RAY_BLOCK_SIZE = 2048
"""Positions per block of the Ray dataset (a block never spans two shards). Ray Data spends
some tens of milliseconds on each block (a task on an actor, the object store, the driver's
executor), so a block carries about half a second of one worker's work."""


def ray_blocks(files: list[InputFile], settings: Settings, done: set[int],
               size: int = RAY_BLOCK_SIZE) -> list[tuple[int, int]]:  # fmt: skip
    """``[first, end)`` positions of each block: the pending shards cut into pieces."""
    total = sum(item.positions for item in files)
    shard_size = settings.shard_size
    blocks = []
    for shard in range(-(-total // shard_size)):
        if shard not in done:
            lo, hi = shard * shard_size, min((shard + 1) * shard_size, total)
            blocks.extend((a, min(a + size, hi)) for a in range(lo, hi, size))
    return blocks


def encode_positions(positions: list[Position]) -> str:
    """A block of positions as one JSON string: what crosses Ray's object store (once to an
    actor, once back). One string per block, not Arrow columns: encoding and decoding cost
    a few µs per document instead of ~20 µs (measured), and any JSON id or field survives."""
    return json.dumps([[p.index, p.file, p.line, p.text, p.doc_id, p.extra, p.error]
                       for p in positions])  # fmt: skip


def decode_positions(data: str) -> list[Position]:
    return [Position(*row) for row in json.loads(data)]


class InputFeed:
    """A Ray actor on the driver's node that reads the inputs once, in order (so they need to
    be on that machine only), and hands the pending positions out block by block as the
    actors ask for them: the dataset streams, and nothing is read far ahead. A block is kept
    until the driver has written it, so that a task Ray retries gets it again."""

    def __init__(self, files: list[InputFile], blocks: list[tuple[int, int]]) -> None:
        self.blocks = blocks
        self.kept: dict[int, str] = {}
        self.read = 0  # blocks read so far
        self.released = 0  # blocks written by the driver, no longer kept
        self.positions = iter_positions(files, blocks[0][0]) if blocks else iter(())

    def block(self, number: int) -> str:
        if number < self.released:
            raise RuntimeError(f"block {number} was asked for after it was written")
        while self.read <= number:
            first, end = self.blocks[self.read]
            rows = []
            for position in self.positions:
                if position.index >= first:
                    rows.append(position)
                if position.index >= end - 1:
                    break
            self.kept[self.read] = encode_positions(rows)
            self.read += 1
        return self.kept[number]

    def release(self, written: int) -> None:
        """Forget the blocks whose positions all lie before ``written``."""
        while self.released < self.read and self.blocks[self.released][1] <= written:
            self.kept.pop(self.released, None)
            self.released += 1


class RayAnnotator:
    """The Ray Data callable class: one pipeline per actor, loaded in the actor (spaCy
    #13506), for the whole run. A batch is block numbers; the actor fetches those blocks
    from the ``InputFeed`` and returns, per block, its positions (as fetched) and the
    entities of its docs (JSON)."""

    def __init__(self, model: str, options: dict[str, Any], feed: Any) -> None:
        self.annotator = Annotator(model, **options)
        self.feed = feed

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        import ray

        numbers = [int(n) for n in batch["block"]]
        blocks = ray.get([self.feed.block.remote(n) for n in numbers])
        entities = []
        for data in blocks:
            texts = [p.text for p in decode_positions(data) if p.error is None]
            entities.append(json.dumps(self.annotator.annotate(texts)))  # type: ignore[arg-type]
        worker = [os.getpid()] * len(numbers)
        return {"block": numbers, "positions": blocks, "entities": entities, "worker": worker}


def _start_ray(ray: Any, settings: Settings) -> bool:
    """Connect to ``--ray-address``, or start a private runtime on this machine (loopback
    only, no usage report); True if this call started one (and must stop it)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if settings.ray_address:
        kwargs["address"] = settings.ray_address
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs["_node_ip_address"] = "127.0.0.1"
        kwargs["num_cpus"] = settings.workers
        if settings.gpus_per_worker:
            kwargs["num_gpus"] = math.ceil(settings.gpus_per_worker * settings.workers)
    ray.init(**kwargs)
    return True


def run_ray(model: str, files: list[InputFile], done: set[int], settings: Settings,
            phases: dict[str, float]) -> ShardResults:  # fmt: skip
    """One streaming Ray dataset over all pending positions: block numbers →
    ``map_batches(RayAnnotator)`` on ``workers`` actors (each loads the pipeline once and
    fetches its blocks from the ``InputFeed``) → back to this process in order, which
    writes each shard as soon as its last position is back."""
    blocks = ray_blocks(files, settings, done)
    if not blocks:
        return
    ray = require_ray()
    began = time.perf_counter()
    started_here = _start_ray(ray, settings)
    phases["engine_start"] = time.perf_counter() - began
    import logging

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        feed = ray.remote(num_cpus=0, scheduling_strategy=here)(InputFeed).remote(files, blocks)
        options = {
            "gpu_id": 0 if settings.gpus_per_worker > 0 else -1,
            "entity_probs": settings.entity_probs,
            "batch_size": settings.batch_size,
        }
        # One input block per block number, so that every actor gets work from the start.
        numbers = ray.data.from_items([{"block": n} for n in range(len(blocks))],
                                      override_num_blocks=len(blocks))  # fmt: skip
        annotated = numbers.map_batches(
            RayAnnotator,
            fn_constructor_args=(model, options, feed),
            compute=ray.data.ActorPoolStrategy(size=settings.workers),
            batch_size=1,
            num_cpus=1,
            num_gpus=settings.gpus_per_worker or None,
            batch_format="numpy",
        )
        yield from _collect_shards(annotated, files, blocks, settings, feed, phases)
    finally:
        stopping = time.perf_counter()
        if started_here:
            ray.shutdown()
        phases["engine_stop"] = time.perf_counter() - stopping


def _collect_shards(
    annotated: Any,
    files: list[InputFile],
    blocks: list[tuple[int, int]],
    settings: Settings,
    feed: Any,
    phases: dict[str, float],
) -> ShardResults:
    """Group the returned positions into shards; every pending position must come back
    exactly once and in order (anything else is an error, never a wrong shard). Counts the
    blocks each actor process did (``phases``: ``workers_used``, ``busiest_worker_share``)."""
    per_worker: Counter = Counter()
    total = sum(item.positions for item in files)
    size = settings.shard_size
    expected = iter(i for first, end in blocks for i in range(first, end))
    shard, positions, entities = -1, [], []
    for row in annotated.iter_rows():
        per_worker[row["worker"]] += 1
        phases["workers_used"] = len(per_worker)
        phases["busiest_worker_share"] = max(per_worker.values()) / sum(per_worker.values())
        found = iter(json.loads(row["entities"]))
        for position in decode_positions(row["positions"]):
            want = next(expected, None)
            if position.index != want:
                raise RuntimeError(
                    f"Ray returned position {position.index} where {want} was expected"
                )
            if position.index // size != shard:
                shard, positions, entities = position.index // size, [], []
            positions.append(position)
            if position.error is None:
                entities.append(next(found))
            if position.index == min((shard + 1) * size, total) - 1:
                yield shard, positions, entities
                feed.release.remote(position.index + 1)
    missing = next(expected, None)
    if missing is not None:
        raise RuntimeError(f"Ray returned no result for position {missing} and later ones")
