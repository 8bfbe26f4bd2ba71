"""A teacher's cached CRF, as crf_ner reads it in training (written by ``teacher.py``).

A cache folder holds ``meta.json`` (the teacher, its labels, tag scheme and tags), the
teacher's CRF scores and allowed moves (``transitions.npy``, ``start.npy``, ``end.npy``,
``allowed_*.npy``), ``offsets.npy`` (where each doc's rows start) and ``emissions.npy``
(``(n_tokens, K)`` float16, memory-mapped). Every array is read with ``allow_pickle=False``.
Kept apart from the reader so that the component imports no pipeline loading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
from spacy.training import Example

__all__ = ["TEACHER_KEY", "TeacherCache", "TeacherMismatchError", "TeacherSignal", "teacher_signal"]

TEACHER_KEY = "crf_ner_teacher"
"""The key of an example's ``TeacherSignal`` in ``example.reference.user_data``."""

CACHE_FORMAT = 1


class TeacherMismatchError(ValueError):
    """The teacher's labels or tag scheme are not the student's."""


class TeacherCache:
    """A complete cache folder, opened read-only: the teacher's CRF and memory-mapped
    per-token emissions of every doc of the corpus it was built for."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text(encoding="utf8"))
        self.teacher: str = meta["teacher"]
        self.component: str = meta["component"]
        self.scheme: str = meta["tag_scheme"]
        self.labels: list[str] = list(meta["labels"])
        self.tag_names: list[str] = list(meta["tag_names"])

        def load(name: str, mmap_mode: Any = None) -> numpy.ndarray:
            return numpy.load(self.path / f"{name}.npy", mmap_mode=mmap_mode, allow_pickle=False)

        self.offsets = load("offsets")
        self.emissions = load("emissions", mmap_mode="r")
        self.transitions, self.start, self.end = (load(n) for n in ("transitions", "start", "end"))
        self.allowed = tuple(load(f"allowed_{n}") for n in ("transitions", "start", "end"))
        n_tags = len(self.tag_names)
        if self.emissions.shape[1:] != (n_tags,) or len(self.offsets) != meta["n_docs"] + 1:
            raise ValueError(f"The teacher cache {self.path} is damaged: delete the folder")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc_emissions(self, index: int) -> numpy.ndarray:
        """The teacher's emissions of doc ``index``, ``(n_tokens, K)`` float16 (a view)."""
        return self.emissions[self.offsets[index] : self.offsets[index + 1]]

    def tag_order(self, tag_names: Sequence[str], scheme: str, labels: Sequence[str]) -> list[int]:
        """The teacher's index of each of the student's tags; an error naming both label sets
        unless the two share labels and tag scheme."""
        if scheme != self.scheme or sorted(tag_names) != sorted(self.tag_names):
            raise TeacherMismatchError(
                f"[crf_ner] The teacher pipeline {self.teacher} (component '{self.component}') "
                f"has the labels {self.labels} in the {self.scheme} scheme, the student the "
                f"labels {list(labels)} in the {scheme} scheme: distillation needs the same "
                "labels and tag scheme. Give the student the teacher's labels "
                "([initialize.components.crf_ner.labels]) and tag_scheme."
            )
        position = {tag: i for i, tag in enumerate(self.tag_names)}
        return [position[tag] for tag in tag_names]


class TeacherSignal:
    """What a training example carries: the doc's rows in a ``TeacherCache``. Shared, never
    copied (``copy.deepcopy`` of a doc's user_data returns it as is)."""

    __slots__ = ("cache", "index")

    def __init__(self, cache: TeacherCache, index: int) -> None:
        self.cache = cache
        self.index = index

    def __deepcopy__(self, memo: dict) -> TeacherSignal:
        return self

    def __reduce__(self):  # a signal is a view into files on disk; never pickled
        raise TypeError("a TeacherSignal can't be pickled; it refers to a teacher cache on disk")

    @property
    def emissions(self) -> numpy.ndarray:
        return self.cache.doc_emissions(self.index)


def teacher_signal(example: Example) -> TeacherSignal | None:
    """The example's teacher signal, if it has one."""
    signal = example.reference.user_data.get(TEACHER_KEY)
    return signal if isinstance(signal, TeacherSignal) else None
