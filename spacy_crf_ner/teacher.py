"""A teacher's CRF for distillation: the ``spacy_crf_ner.TeacherCorpus.v1`` reader.

The reader tokenizes the training texts with the student's tokenizer, runs a trained
crf_ner pipeline (the teacher) over them once, and caches what the teacher's CRF needs on
disk: each token's emissions (float16, ``(n_tokens, K)``), and the teacher's transition,
start and end scores and allowed moves, once. Every example it yields carries a
``TeacherSignal`` (the doc's rows in the cache) in ``example.reference.user_data``, from
which crf_ner rebuilds the teacher's distribution per batch: its unary and pair marginals
for the KL (at any temperature), or its Viterbi path for hard silver labels.

Why emissions rather than marginals: pair marginals are ``(T, K, K)`` per sequence (17x
the emissions for K = 17), a temperature could not be applied to cached marginals, and
marginals fix the CRF sequences (a sentence split of the student would not match them).
From emissions the teacher's marginals are exact and cost one forward-backward pass per
batch, which the student's loss makes anyway.

The cache is a folder named by a hash of the teacher pipeline's files, the teacher
component and every doc's tokens (so a changed teacher, text or tokenizer gets a new one),
written under a temporary name and renamed when complete: an interrupted run leaves no
partial cache, and a restart reuses a complete one. Arrays are ``.npy`` files read with
``allow_pickle=False``; the emissions are memory-mapped, so the memory used does not grow
with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from .loaders import TEXT_SUFFIXES, load_docbin, load_pipeline, read_texts, require_crf_component
from .teacher_cache import CACHE_FORMAT, TEACHER_KEY, TeacherCache, TeacherSignal

# float16 holds +-65504; emissions are clipped a little inside it.
_FLOAT16_LIMIT = 60000.0

# --------------------------------------------------------------------------------------------
# Reading the corpus


def read_corpus(path: Path, nlp: Language, limit: int = 0) -> list[Doc]:
    """Docs tokenized by ``nlp``: ``.txt`` (one doc per non-empty line), ``.jsonl`` (the
    "text" field) or ``.spacy`` DocBins (file or folder; their entities are gold)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".spacy":
        docs = load_docbin(path, nlp.vocab)
        return docs[:limit] if limit else docs
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise ValueError(f"Unsupported training text {path}: expected .txt, .jsonl or .spacy")
    return [nlp.make_doc(str(text)) for text in read_texts(path, nlp.vocab, limit or None)]


def _hash_files(root: Path, digest: Any) -> None:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(root) if file != root else file.name).encode())
        with file.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)


def cache_key(teacher: Path, component: str | None, docs: Iterable[Doc]) -> str:
    """A hash of the teacher's files, the component used and every doc's tokens."""
    digest = hashlib.sha256(f"crf_ner teacher cache {CACHE_FORMAT} {component}".encode())
    _hash_files(Path(teacher), digest)
    for doc in docs:
        digest.update(json.dumps([[t.text, t.whitespace_] for t in doc]).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:24]


def build_cache(
    teacher_path: Path,
    docs: Sequence[Doc],
    folder: Path,
    *,
    component: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> TeacherCache:
    """Run the teacher over ``docs`` (their tokens, not re-tokenized) and write the cache
    folder; written under a temporary name and renamed when complete."""
    from tqdm import tqdm

    from .crf_batch import crf_params
    from .threads import torch_threads

    teacher = load_pipeline(teacher_path)
    name = require_crf_component(teacher, component)
    ner = teacher.get_pipe(name)
    if not ner.labels or not ner._is_trained():
        raise ValueError(f"The teacher pipeline {teacher_path} has an untrained '{name}'")
    before = teacher.pipe_names[: teacher.pipe_names.index(name)]
    tag_names = list(ner.tag_names)
    lengths = numpy.asarray([len(doc) for doc in docs], dtype="int64")
    offsets = numpy.concatenate([[0], numpy.cumsum(lengths)]).astype("int64")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        emissions = numpy.lib.format.open_memmap(
            tmp / "emissions.npy",
            mode="w+",
            dtype="float16",
            shape=(int(offsets[-1]), len(tag_names)),
        )
        bar = tqdm(
            total=len(docs), desc=f"Teacher {teacher_path}", unit="doc", disable=not progress
        )
        with torch_threads(), teacher.select_pipes(enable=before):
            for first in range(0, len(docs), batch_size):
                batch = docs[first : first + batch_size]
                own = [
                    Doc(
                        teacher.vocab,
                        words=[t.text for t in doc],
                        spaces=[bool(t.whitespace_) for t in doc],
                    )
                    for doc in batch
                ]
                own = list(teacher.pipe(own, batch_size=batch_size))
                rows = [i for i, doc in enumerate(own, start=first) if len(doc)]
                scores = ner.model.predict([doc for doc in own if len(doc)]) if rows else []
                for i, doc_scores in zip(rows, scores, strict=True):
                    host = ner.model.ops.to_numpy(doc_scores)
                    emissions[offsets[i] : offsets[i + 1]] = numpy.clip(
                        host, -_FLOAT16_LIMIT, _FLOAT16_LIMIT
                    )
                bar.update(len(batch))
        bar.close()
        emissions.flush()
        del emissions
        params = [
            p.detach().cpu().numpy().astype("float32") for p in crf_params(ner.model.get_ref("crf"))
        ]
        constraints = ner._get_constraints()
        n = len(tag_names)
        if constraints is None:
            allowed = [numpy.ones((n, n), bool), numpy.ones(n, bool), numpy.ones(n, bool)]
        else:
            allowed = [c.cpu().numpy().astype(bool) for c in constraints]
        arrays = {
            "offsets": offsets,
            "transitions": params[0],
            "start": params[1],
            "end": params[2],
        }
        arrays.update(
            {
                f"allowed_{k}": a
                for k, a in zip(("transitions", "start", "end"), allowed, strict=True)
            }
        )
        for key, array in arrays.items():
            numpy.save(tmp / f"{key}.npy", array, allow_pickle=False)
        meta = {
            "format": CACHE_FORMAT,
            "teacher": str(teacher_path),
            "component": name,
            "tag_scheme": ner.scheme.name,
            "labels": list(ner.labels),
            "tag_names": tag_names,
            "n_docs": len(docs),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another run finished the same cache first: keep that one
            if not (folder / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TeacherCache(folder)


@registry.readers("spacy_crf_ner.TeacherCorpus.v1")
def create_teacher_corpus(
    teacher: Path | None = None,
    path: Path | None = None,
    gold: Path | None = None,
    cache_dir: Path = Path("training/teacher_cache"),
    component: str | None = None,
    batch_size: int = 64,
    limit: int = 0,
    progress: bool = True,
) -> Callable[[Language], Iterator[Example]]:
    """Training examples that carry a teacher's CRF (see the module docstring).

    teacher: a trained pipeline with a crf_ner component (the teacher).
    path: training text: ``.txt`` (one doc per line), ``.jsonl`` ("text") or ``.spacy``
        (entities in it are gold). gold: a ``.spacy`` DocBin (or folder) of gold docs; the
        teacher runs on these too. At least one of the two.
    cache_dir: where the teacher's output is cached, one folder per teacher and corpus.
    component: the teacher's crf_ner component (default: its first).
    batch_size: docs per teacher batch. limit: read at most this many docs of each file.
    progress: show a progress bar while the teacher runs.

    The teacher runs on the GPU when training does (``spacy train --gpu-id``).
    """
    sources = [Path(p) for p in (path, gold) if p is not None]
    if not sources:
        raise ValueError(
            "spacy_crf_ner.TeacherCorpus.v1 needs training text (path, e.g. --paths.raw) or "
            "gold docs (gold, e.g. --paths.train); both are null"
        )
    if teacher is None:
        raise ValueError(
            "spacy_crf_ner.TeacherCorpus.v1 needs a teacher pipeline (teacher, e.g. "
            "--paths.teacher); it is null"
        )
    teacher = Path(teacher)
    if not teacher.exists():
        raise FileNotFoundError(f"Teacher pipeline not found: {teacher}")
    loaded: dict[str, Any] = {}

    def corpus(nlp: Language) -> Iterator[Example]:
        # spaCy calls the reader several times (initialize, every epoch): the texts are
        # read, hashed and (if needed) run through the teacher on the first call only.
        if "docs" not in loaded:
            docs = [doc for source in sources for doc in read_corpus(source, nlp, limit)]
            key = cache_key(teacher, component, docs)
            folder = Path(cache_dir) / key
            if (folder / "meta.json").is_file():
                cache = TeacherCache(folder)
            else:
                cache = build_cache(
                    teacher, docs, folder, component=component, batch_size=batch_size,
                    progress=progress,
                )  # fmt: skip
            loaded.update(docs=docs, cache=cache)
        cache = loaded["cache"]
        for index, reference in enumerate(loaded["docs"]):
            reference.user_data[TEACHER_KEY] = TeacherSignal(cache, index)
            words = [t.text for t in reference]
            spaces = [bool(t.whitespace_) for t in reference]
            yield Example(Doc(nlp.vocab, words=words, spaces=spaces), reference)

    return corpus
