"""Mention replacement: the ``spacy_crf_ner.mention_replacement.v1`` augmenter.

Each training doc is yielded as it is and, with probability ``level``, once more with some
of its entity mentions replaced by other mentions of the same label from the training
corpus (Dai & Adel 2020, "An analysis of simple data augmentation for named entity
recognition"). A tagger that sees "ORG said" with many different names learns to read the
context rather than memorise names; most entities of a real test set are not in the
training data (46% on CoNLL-2003, BENCHMARKS.md §11.12). On CoNLL-2003 it did not raise test
F1 (BENCHMARKS.md §11.21), so the shipped configs leave it off.

Why a pool read from the training file rather than collected on the fly: ``spacy train``
(with ``max_epochs`` >= 0) runs the augmenter once over the corpus and shuffles that list
every epoch, so a pool filled as the docs stream past would leave the first docs with few
names to choose from. Reading the corpus once more, when the augmenter is first called,
gives every doc the whole pool.

The copy keeps the doc's tokens, whitespace, missing entity annotation and sentence starts
outside the replaced mentions; other annotation (tags, parses) is left unset in the copy,
which spaCy's components treat as missing, not as wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry
from spacy.vocab import Vocab

from .loaders import load_docbin

# A mention's token texts and the whitespace after each of them but the last (the last
# takes the whitespace of the mention it replaces).
Mention = tuple[tuple[str, ...], tuple[str, ...]]


@registry.augmenters("spacy_crf_ner.mention_replacement.v1")
def create_mention_replacement_augmenter(
    path: str | Path | None, level: float = 0.5, rate: float = 0.5
) -> Callable[[Language, Example], Iterator[Example]]:
    """Yield every example, and with probability ``level`` a copy in which each entity
    mention is replaced, with probability ``rate``, by a random other mention of its label
    from the docs at ``path`` (a ``.spacy`` DocBin or a folder of them; usually
    ``${paths.train}``)."""
    if path is None:
        raise ValueError(
            "spacy_crf_ner.mention_replacement.v1 needs the path of the training docs to "
            "draw mentions from: set path = ${paths.train}"
        )
    for name, value in (("level", level), ("rate", rate)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"spacy_crf_ner.mention_replacement.v1: {name} must be between 0 and 1, got {value}"
            )
    return MentionReplacement(Path(path), level=level, rate=rate)


class MentionReplacement:
    """The augmenter; its mention pool is read from ``path`` on the first call."""

    def __init__(self, path: Path, *, level: float, rate: float) -> None:
        self.path = path
        self.level = level
        self.rate = rate
        self._pool: dict[str, list[Mention]] | None = None

    @property
    def pool(self) -> dict[str, list[Mention]]:
        """Each label's distinct mentions, in corpus order."""
        if self._pool is None:
            self._pool = collect_mentions(load_docbin(self.path, Vocab()))
        return self._pool

    def __call__(self, nlp: Language, example: Example) -> Iterator[Example]:
        yield example
        if self.level <= 0.0 or self.rate <= 0.0 or random.random() >= self.level:
            return
        reference = replace_mentions(example.reference, self.pool, self.rate)
        if reference is None:
            return
        if [t.text for t in example.predicted] == [t.text for t in example.reference]:
            # The corpus kept the reference tokens (gold_preproc, or unknown spaces): so do we.
            words = [t.text for t in reference]
            spaces = [bool(t.whitespace_) for t in reference]
            predicted = Doc(nlp.vocab, words=words, spaces=spaces)
        else:
            predicted = nlp.make_doc(reference.text)
        yield Example(predicted, reference)


def collect_mentions(docs: list[Doc]) -> dict[str, list[Mention]]:
    """Each label's distinct mentions (token texts and inner whitespace)."""
    pool: dict[str, list[Mention]] = {}
    seen: set[tuple[str, Mention]] = set()
    for doc in docs:
        for ent in doc.ents:
            mention = _mention(ent)
            if (ent.label_, mention) not in seen:
                seen.add((ent.label_, mention))
                pool.setdefault(ent.label_, []).append(mention)
    return pool


def _mention(span: Span) -> Mention:
    return tuple(t.text for t in span), tuple(t.whitespace_ for t in span[:-1])


def replace_mentions(doc: Doc, pool: dict[str, list[Mention]], rate: float) -> Doc | None:
    """A copy of ``doc`` with each mention replaced at ``rate`` by another mention of its
    label from ``pool``; None when no mention was replaced."""
    words: list[str] = []
    spaces: list[bool] = []
    tags: list[str | None] = []
    sent_starts: list[bool | None] = []
    keep_sents = doc.has_annotation("SENT_START")
    replaced = False
    position = 0
    for ent in doc.ents:
        _copy_tokens(doc[position : ent.start], words, spaces, tags, sent_starts)
        position = ent.end
        old = _mention(ent)
        candidates = pool.get(ent.label_, [])
        # The pool's mentions are distinct: another name exists unless it holds only this one.
        has_other = len(candidates) > 1 or (len(candidates) == 1 and candidates[0] != old)
        if not has_other or random.random() >= rate:
            _copy_tokens(ent, words, spaces, tags, sent_starts)
            continue
        new = random.choice(candidates)
        while new == old:  # another name, not the same one again
            new = random.choice(candidates)
        replaced = True
        texts, inner = new
        words.extend(texts)
        spaces.extend([bool(ws) for ws in inner] + [bool(ent[-1].whitespace_)])
        tags.extend([f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (len(texts) - 1))
        sent_starts.extend([ent[0].is_sent_start] + [False] * (len(texts) - 1))
    if not replaced:
        return None
    _copy_tokens(doc[position:], words, spaces, tags, sent_starts)
    return Doc(
        doc.vocab,
        words=words,
        spaces=spaces,
        ents=tags,
        sent_starts=sent_starts if keep_sents else None,
    )


def _copy_tokens(
    span: Span,
    words: list[str],
    spaces: list[bool],
    tags: list[str | None],
    sent_starts: list[bool | None],
) -> None:
    for token in span:
        words.append(token.text)
        spaces.append(bool(token.whitespace_))
        iob = token.ent_iob_
        # "" is missing annotation (partial labels): it stays missing.
        tags.append(None if iob == "" else "O" if iob == "O" else f"{iob}-{token.ent_type_}")
        sent_starts.append(token.is_sent_start)
