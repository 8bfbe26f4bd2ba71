"""Entity tag schemes (IOB1, BIO, BILUO, BIOES, BMES, BMEWO) on token offsets.

The CRF predicts one tag per token; this module is the single place that knows how tags
encode entity spans, which tag sequences are valid, and therefore which transitions the
CRF must forbid. Every scheme is described by five *roles*:

* ``O`` outside an entity,
* ``B`` begin (first token of a multi-token entity; in IOB1 only of an entity that directly
  follows an entity of the same type),
* ``I`` inside (in IOB1 and BIO also the last token),
* ``L`` last token of a multi-token entity (BILUO ``L``, BIOES/BMES/BMEWO ``E``),
* ``U`` unit, a single-token entity (BILUO ``U``, BIOES/BMES ``S``, BMEWO ``W``).

Validity is a first-order property (whether a tag may start a sequence, follow the
previous tag, or end a sequence), so ``allowed_transitions`` describes exactly the
sequences that ``tags_to_spans(strict=True)`` accepts. Pure Python and numpy on purpose:
the CRF and the spaCy component import it, and so can data-preparation scripts.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

Span = tuple[int, int, str]
"""An entity as (start token, end token exclusive, label)."""

SCHEME_NAMES: tuple[str, ...] = ("IOB1", "BIO", "BILUO", "BIOES", "BMES", "BMEWO")

_ALIASES: dict[str, str] = {"IOB2": "BIO", "BILOU": "BILUO", "IOBES": "BIOES"}

# role -> prefix letter, in the fixed order used by ``tag_names``.
_LETTERS: dict[str, dict[str, str]] = {
    "IOB1": {"B": "B", "I": "I"},
    "BIO": {"B": "B", "I": "I"},
    "BILUO": {"B": "B", "I": "I", "L": "L", "U": "U"},
    "BIOES": {"B": "B", "I": "I", "L": "E", "U": "S"},
    "BMES": {"B": "B", "I": "M", "L": "E", "U": "S"},
    "BMEWO": {"B": "B", "I": "M", "L": "E", "U": "W"},
}

# prefix letter -> role, per scheme.
_ROLES: dict[str, dict[str, str]] = {
    name: {letter: role for role, letter in letters.items()} for name, letters in _LETTERS.items()
}

_OUTSIDE = "O"
MISSING_TAG = "-"
"""spaCy's tag for a token without annotation (``Example.get_aligned_ner``); misaligned
tokens get None. Both are "missing" (``is_missing``): the CRF leaves them unconstrained."""

# A parsed tag: (role, label); the outside tag is ("O", "").
_Parsed = tuple[str, str]


class InvalidTagSequence(ValueError):
    """A tag sequence that does not follow its scheme; says where, so data can be fixed."""

    def __init__(self, position: int, tag: str, message: str) -> None:
        super().__init__(f"position {position}: {message}")
        self.position = position
        self.tag = tag


def _canonical_name(name: str) -> str:
    """Canonical scheme name for a case-insensitive name or alias."""
    key = name.upper() if isinstance(name, str) else ""
    key = _ALIASES.get(key, key)
    if key not in _LETTERS:
        aliases = ", ".join(f"{a} (= {c})" for a, c in _ALIASES.items())
        raise ValueError(
            f"Unknown tag scheme {name!r}; known schemes: {', '.join(SCHEME_NAMES)}; "
            f"aliases: {aliases} (case-insensitive)"
        )
    return key


def _check_label(label: object) -> str:
    """Reject labels that would make tags ambiguous or unparsable."""
    if not isinstance(label, str) or not label:
        raise ValueError(f"Invalid entity label {label!r}: labels must be non-empty strings")
    if label in (_OUTSIDE, MISSING_TAG):
        raise ValueError(f"Invalid entity label {label!r}: 'O' and '-' are reserved tags")
    if any(ch.isspace() for ch in label):
        raise ValueError(f"Invalid entity label {label!r}: labels must not contain whitespace")
    return label


@dataclass(frozen=True)
class TagScheme:
    """One tag scheme; ``TagScheme("iob2") == TagScheme("BIO")`` (names are canonicalised)."""

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _canonical_name(self.name))

    # ------------------------------------------------------------------ helpers
    @property
    def prefixes(self) -> tuple[str, ...]:
        """The prefix letters of this scheme in ``tag_names`` order (e.g. B, I, L, U)."""
        return tuple(_LETTERS[self.name].values())

    def _letter(self, role: str) -> str:
        return _LETTERS[self.name][role]

    def _tag(self, role: str, label: str) -> str:
        return _OUTSIDE if role == "O" else f"{self._letter(role)}-{label}"

    def _parse(self, tag: object) -> _Parsed | None:
        """(role, label) of a tag, or None when it is not a tag of this scheme."""
        if tag == _OUTSIDE:
            return ("O", "")
        if not isinstance(tag, str):
            return None
        letter, sep, label = tag.partition("-")
        role = _ROLES[self.name].get(letter)
        if not sep or not label or role is None:
            return None
        return (role, label)

    # ---------------------------------------------------------- validity rules
    def _may_start(self, cur: _Parsed) -> bool:
        role = cur[0]
        if self.name == "BIO":
            return role != "I"
        if self.name == "IOB1":
            return role != "B"
        return role in ("O", "B", "U")

    def _may_follow(self, prev: _Parsed, cur: _Parsed) -> bool:
        (p_role, p_label), (c_role, c_label) = prev, cur
        if self.name == "BIO":
            return c_role != "I" or (p_role in ("B", "I") and p_label == c_label)
        if self.name == "IOB1":
            return c_role != "B" or (p_role in ("B", "I") and p_label == c_label)
        if p_role in ("B", "I"):
            return c_role in ("I", "L") and c_label == p_label
        return c_role in ("O", "B", "U")

    def _may_end(self, cur: _Parsed) -> bool:
        if self.name in ("BIO", "IOB1"):
            return True
        return cur[0] in ("O", "L", "U")

    def _hint(self, cur: _Parsed, prev: _Parsed | None) -> str:
        """Why a transition into ``cur`` is invalid, in this scheme's letters."""
        role, label = cur
        b, i = self._letter("B"), self._letter("I")
        if self.name == "IOB1":
            return (
                f"{b}-{label} may only start an entity that directly follows an entity of "
                f"the same type, {i}-{label} or {b}-{label}"
            )
        if prev is not None and prev[0] in ("B", "I") and self.name != "BIO":
            p_label = prev[1]
            return (
                f"{self._tag(prev[0], p_label)} must be followed by {i}-{p_label} "
                f"or {self._letter('L')}-{p_label}"
            )
        what = "continue" if role == "I" else "close"
        return f"{self._tag(role, label)} must {what} a preceding {b}-{label} or {i}-{label}"

    def _problems(self, tags: Sequence[str]) -> Iterator[tuple[int, str, str]]:
        """Yield (position, tag, message) for every problem, in order of position."""
        scheme = f"a valid {self.name} sequence"
        prev: _Parsed | None = None  # None at the start and after an unknown tag
        prev_tag = ""
        for pos, tag in enumerate(tags):
            cur = self._parse(tag)
            message = ""
            if cur is None:
                letters = ", ".join(f"{p}-" for p in self.prefixes)
                message = (
                    f"{tag!r} is not a {self.name} tag "
                    f"(expected 'O' or a prefix {letters} followed by a label)"
                )
            elif pos == 0 and not self._may_start(cur):
                hint = self._hint(cur, None)
                message = f"{tag!r} at the start of the sequence is not {scheme} ({hint})"
            elif pos > 0 and prev is not None and not self._may_follow(prev, cur):
                hint = self._hint(cur, prev)
                message = f"{tag!r} after {prev_tag!r} is not {scheme} ({hint})"
            if message:
                yield pos, tag, message
            prev, prev_tag = cur, tag
        if prev is not None and not self._may_end(prev):
            closer = f"{self._letter('L')}-{prev[1]}"
            message = (
                f"{prev_tag!r} at the end of the sequence is not {scheme} "
                f"(the entity is not closed by {closer})"
            )
            yield len(tags) - 1, prev_tag, message

    # -------------------------------------------------------------- public API
    def tag_names(self, labels: Iterable[str]) -> list[str]:
        """All tags for ``labels``: "O", then per sorted label its tags in prefix order.

        Deterministic, because the CRF's tag index is the position in this list.
        """
        checked = {_check_label(label) for label in labels}
        names = [_OUTSIDE]
        for label in sorted(checked):
            names.extend(f"{letter}-{label}" for letter in self.prefixes)
        return names

    def spans_to_tags(self, spans: Sequence[Span], n_tokens: int) -> list[str]:
        """Encode non-overlapping token spans as one tag per token."""
        n_tokens = operator.index(n_tokens)
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        norm: list[Span] = []
        for span in spans:
            try:
                start, end, label = span
                start, end = operator.index(start), operator.index(end)
            except (TypeError, ValueError) as err:
                raise ValueError(f"Invalid span {span!r}: expected (start, end, label)") from err
            if start >= end:
                raise ValueError(f"Invalid span {span!r}: empty (start >= end)")
            if start < 0 or end > n_tokens:
                raise ValueError(f"Invalid span {span!r}: out of range for {n_tokens} tokens")
            try:
                _check_label(label)
            except ValueError as err:
                raise ValueError(f"Invalid span {span!r}: {err}") from None
            norm.append((start, end, label))
        norm.sort()
        for before, after in zip(norm, norm[1:], strict=False):
            if after[0] < before[1]:
                raise ValueError(f"Spans {before!r} and {after!r} overlap")

        tags = [_OUTSIDE] * n_tokens
        prev: Span | None = None
        for start, end, label in norm:
            if self.name in ("BIO", "IOB1"):
                first = "B"
                if self.name == "IOB1":
                    follows_same = prev is not None and prev[1] == start and prev[2] == label
                    first = "B" if follows_same else "I"
                tags[start] = self._tag(first, label)
                for k in range(start + 1, end):
                    tags[k] = self._tag("I", label)
            elif end - start == 1:
                tags[start] = self._tag("U", label)
            else:
                tags[start] = self._tag("B", label)
                for k in range(start + 1, end - 1):
                    tags[k] = self._tag("I", label)
                tags[end - 1] = self._tag("L", label)
            prev = (start, end, label)
        return tags

    def tags_to_spans(self, tags: Sequence[str], *, strict: bool = True) -> list[Span]:
        """Decode tags into spans.

        ``strict`` raises InvalidTagSequence at the first invalid position. Otherwise the
        sequence is repaired as conlleval does, and nothing raises: an inside/last tag that
        cannot continue the open entity starts a new one, an entity that is not closed ends
        where the next tag does not continue it, and unknown tags count as "O".
        """
        if strict:
            for pos, tag, message in self._problems(tags):
                raise InvalidTagSequence(pos, tag, message)
        spans: list[Span] = []
        open_start: int | None = None
        open_label = ""

        def close(end: int) -> None:
            nonlocal open_start
            if open_start is not None:
                spans.append((open_start, end, open_label))
                open_start = None

        for pos, tag in enumerate(tags):
            role, label = self._parse(tag) or ("O", "")
            continues = open_start is not None and open_label == label
            if role == "O":
                close(pos)
            elif role == "B" or (role == "I" and not continues):
                close(pos)
                open_start, open_label = pos, label
            elif role == "U" or (role == "L" and not continues):
                close(pos)
                spans.append((pos, pos + 1, label))
            elif role == "L":  # closes the open entity of the same type
                spans.append((open_start, pos + 1, label))
                open_start = None
            # role == "I" continuing the open entity: nothing to do
        close(len(tags))
        return spans

    def validate(self, tags: Sequence[str]) -> list[tuple[int, str]]:
        """Every problem of a tag sequence as (position, message); [] when it is valid."""
        return [(pos, message) for pos, _tag, message in self._problems(tags)]

    def segment_patterns(
        self, label: str, length: int
    ) -> list[tuple[list[str], frozenset[str], frozenset[str]]]:
        """The ways one entity of ``length`` tokens is written in a valid sequence.

        Each pattern is ``(tags, not_before, not_after)``: the entity is exactly these tokens
        when its tags are ``tags`` and the neighbouring tags are not in those sets. BILUO-like
        schemes close entities with their own tags; BIO needs "the next tag is not I-X"; IOB1
        writes an entity as I... (previous tag not of type X) or, after an X entity, as B I...
        The probability of an entity is the sum over its patterns (they are disjoint).
        """
        if length < 1:
            raise ValueError(f"an entity has at least one token; got length {length}")
        tags = self.spans_to_tags([(0, length, label)], length)
        inside = frozenset({self._tag("I", label)})
        if self.name == "BIO":
            return [(tags, frozenset(), inside)]
        if self.name == "IOB1":
            begin = [self._tag("B", label)] + [self._tag("I", label)] * (length - 1)
            same_type = frozenset({self._tag("B", label), self._tag("I", label)})
            return [(tags, same_type, inside), (begin, frozenset(), inside)]
        return [(tags, frozenset(), frozenset())]

    def allowed_transitions(
        self, tag_names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boolean masks for a CRF over ``tag_names``: (trans (K, K), start (K,), end (K,)).

        ``trans[i, j]``: tag j may follow tag i; ``start[j]``: a sequence may begin with j;
        ``end[i]``: a sequence may end with i. A sequence uses only allowed transitions
        exactly when ``tags_to_spans(strict=True)`` accepts it.
        """
        parsed: list[_Parsed] = []
        for tag in tag_names:
            p = self._parse(tag)
            if p is None:
                raise ValueError(f"{tag!r} is not a {self.name} tag")
            parsed.append(p)
        k = len(parsed)
        trans = np.zeros((k, k), dtype=bool)
        for i, prev in enumerate(parsed):
            for j, cur in enumerate(parsed):
                trans[i, j] = self._may_follow(prev, cur)
        start = np.array([self._may_start(p) for p in parsed], dtype=bool)
        end = np.array([self._may_end(p) for p in parsed], dtype=bool)
        return trans, start, end


def get_scheme(name: str | TagScheme) -> TagScheme:
    """The scheme for a case-insensitive name or alias; ValueError lists the known names."""
    if isinstance(name, TagScheme):
        return name
    return TagScheme(name)


def convert_tags(
    tags: Sequence[str],
    source: str | TagScheme,
    target: str | TagScheme,
    *,
    strict: bool = True,
) -> list[str]:
    """Re-encode tags from one scheme in another, via spans (``strict`` as in tags_to_spans)."""
    spans = get_scheme(source).tags_to_spans(tags, strict=strict)
    return get_scheme(target).spans_to_tags(spans, len(tags))


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> TagScheme:
    """Guess the scheme of a corpus from the prefixes it uses (one pass over the corpus).

    Rule, first match wins: any ``W-`` => BMEWO; any ``M-`` => BMES; any ``L-`` or ``U-``
    => BILUO; any ``E-`` or ``S-`` => BIOES. With only ``B-``/``I-``: the one of IOB1 and
    BIO with fewer invalid positions (as counted by ``validate``), BIO on a tie (also for a
    corpus without entities). IOB1 finds invalid every ``B-X`` that opens an entity (at the
    start of a sequence or after ``O`` or a tag of another type), BIO every ``I-X`` that
    does; so CoNLL-2003's eng.train (IOB1 with two ``B-MISC`` after ``O``) is IOB1. Missing
    tags ("-", None) and unknown tags are ignored, and no evidence is taken across them. A
    BMES/BMEWO corpus without ``M-``/``W-`` tags is reported as BIOES, which decodes its
    tags identically.
    """
    letters: set[str] = set()
    i_opens = 0  # invalid in BIO
    b_opens = 0  # invalid in IOB1
    for seq in tag_sequences:
        prev: tuple[str, str] | None = ("O", "")  # (role, label); None = unknown
        for tag in seq:
            cur: tuple[str, str] | None = None
            if tag == _OUTSIDE:
                cur = ("O", "")
            elif isinstance(tag, str) and len(tag) > 2 and tag[1] == "-":
                letters.add(tag[0])
                if tag[0] in ("B", "I"):  # other letters are unknown to IOB1 and BIO
                    cur = (tag[0], tag[2:])
            if cur is not None and prev is not None:
                letter, label = cur
                same = prev[0] in ("B", "I") and prev[1] == label
                if letter == "I" and not same:
                    i_opens += 1
                elif letter == "B" and not same:
                    b_opens += 1
            prev = cur
    for marker, name in (("W", "BMEWO"), ("M", "BMES"), ("LU", "BILUO"), ("ES", "BIOES")):
        if letters & set(marker):
            return TagScheme(name)
    return TagScheme("IOB1" if b_opens < i_opens else "BIO")


def is_missing(tag: str | None) -> bool:
    """Whether an aligned BILUO tag is missing: "-" (not annotated) or None (misaligned)."""
    return tag is None or tag == MISSING_TAG


class AnnotatedRun(NamedTuple):
    """A maximal run ``biluo[start:end]`` of annotated (not missing) BILUO tags.

    ``open_start``: the run begins inside an entity whose beginning may lie in the gap
    before it (it starts with I-/L- after a missing position); ``open_end``: the run ends
    inside an entity that may continue into the gap after it (B-/I- before one).
    """

    start: int
    end: int
    tags: list[str]
    open_start: bool
    open_end: bool


def annotated_runs(biluo: Sequence[str | None]) -> Iterator[AnnotatedRun]:
    """The maximal runs of annotated tags of aligned BILUO tags, in order.

    The one walker over partial annotation: ``biluo_to_scheme`` converts each run and
    ``biluo_problems`` validates each run, both closing an entity cut by a gap on the gap's
    side, because the gap may hold the rest of it.
    """
    n = len(biluo)
    pos = 0
    while pos < n:
        if is_missing(biluo[pos]):
            pos += 1
            continue
        end = pos
        while end < n and not is_missing(biluo[end]):
            end += 1
        run = [str(tag) for tag in biluo[pos:end]]
        open_start = pos > 0 and run[0][:2] in ("I-", "L-")
        open_end = end < n and run[-1][:2] in ("B-", "I-")
        yield AnnotatedRun(pos, end, run, open_start, open_end)
        pos = end


def biluo_problems(biluo: Sequence[str | None]) -> list[tuple[int, str]]:
    """Problems inside each run of annotated BILUO tags, as (position, message).

    A run may start inside an entity or end inside one where it borders a missing position
    (the gap may hold the rest), but within a run the tags must form non-overlapping
    entities: e.g. B-PER B-ORG L-ORG L-PER (two overlapping entities) is rejected.
    """
    scheme = TagScheme("BILUO")
    problems = []
    for run in annotated_runs(biluo):
        # Close entities that are cut by a gap with virtual tags, then validate strictly.
        head = [f"B-{run.tags[0][2:]}"] if run.open_start else []
        tail = [f"L-{run.tags[-1][2:]}"] if run.open_end else []
        for offset, message in scheme.validate(head + run.tags + tail):
            position = min(max(run.start + offset - len(head), run.start), run.end - 1)
            problems.append((position, message))
    return problems


def entity_crosses(biluo: Sequence[str | None], boundary: int) -> bool:
    """Whether a gold entity of aligned BILUO tags continues across the token boundary
    before position ``boundary`` (0 < boundary < len(biluo))."""
    before, after = biluo[boundary - 1], biluo[boundary]
    return (not is_missing(after) and str(after)[:2] in ("I-", "L-")) or (
        not is_missing(before) and str(before)[:2] in ("B-", "I-")
    )


def biluo_to_scheme(biluo: Sequence[str | None], scheme: str | TagScheme) -> list[str | None]:
    """Convert spaCy's aligned BILUO tags (``Example.get_aligned_ner()``) to ``scheme``.

    Missing ("-") and misaligned (None) positions stay None, so the CRF can leave them
    unconstrained. Each maximal run of annotated tags is converted on its own; an entity
    cut by a missing position keeps the tags of its visible part (e.g. BIO ``I-X`` after
    a gap, ``B-X`` before one), because the gap may hold its beginning or its end. Invalid
    BILUO inside a run is repaired as in ``tags_to_spans(strict=False)``.
    """
    target = get_scheme(scheme)
    source = TagScheme("BILUO")
    out: list[str | None] = [None] * len(biluo)
    for run in annotated_runs(biluo):
        length = run.end - run.start
        # Pad one virtual token on each side, so that an entity cut by a gap can be
        # extended into it and encoded as the middle of a longer entity.
        spans = [(s + 1, e + 1, lab) for s, e, lab in source.tags_to_spans(run.tags, strict=False)]
        if spans and run.open_start and spans[0][0] == 1:
            spans[0] = (0, spans[0][1], spans[0][2])
        if spans and run.open_end and spans[-1][1] == length + 1:
            spans[-1] = (spans[-1][0], length + 2, spans[-1][2])
        out[run.start : run.end] = target.spans_to_tags(spans, length + 2)[1:-1]
    return out
