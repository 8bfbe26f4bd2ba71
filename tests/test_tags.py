"""Tests for spacy_crf_ner.tags: encoding, validity, repair, CRF masks, scheme detection."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_crf_ner.tags import (
    SCHEME_NAMES,
    InvalidTagSequence,
    Span,
    TagScheme,
    biluo_to_scheme,
    convert_tags,
    detect_scheme,
    get_scheme,
)

try:
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities
except ImportError:  # pragma: no cover - seqeval is a dependency of the package
    seqeval_entities = None

LABELS = ["PER", "LOC", "GPE-LOC"]  # a label containing "-" must survive the round trip


@st.composite
def spans_and_length(draw: st.DrawFn, labels: list[str] = LABELS) -> tuple[list[Span], int]:
    """Random non-overlapping spans (adjacent ones included) and a document length."""
    spans: list[Span] = []
    pos = draw(st.integers(0, 3))
    for _ in range(draw(st.integers(0, 6))):
        length = draw(st.integers(1, 4))
        spans.append((pos, pos + length, draw(st.sampled_from(labels))))
        pos += length + draw(st.integers(0, 2))  # gap 0 => adjacent entities
    return spans, pos + draw(st.integers(0, 2))


def is_consistent(tags: list[str], scheme: TagScheme) -> bool:
    """Whether tags follow only allowed transitions (start, pairwise, end)."""
    trans, start, end = scheme.allowed_transitions(names := sorted(set(tags)))
    idx = [names.index(t) for t in tags]
    if not idx:
        return True
    return bool(
        start[idx[0]] and end[idx[-1]] and all(trans[a, b] for a, b in itertools.pairwise(idx))
    )


# ------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", SCHEME_NAMES)
@given(data=spans_and_length())
def test_spans_tags_round_trip(name: str, data: tuple[list[Span], int]) -> None:
    spans, n = data
    scheme = get_scheme(name)
    tags = scheme.spans_to_tags(spans, n)
    assert len(tags) == n
    assert scheme.validate(tags) == []
    assert is_consistent(tags, scheme)
    assert scheme.tags_to_spans(tags) == spans
    assert scheme.tags_to_spans(tags, strict=False) == spans
    # The spans given in any order encode the same tags.
    assert scheme.spans_to_tags(spans[::-1], n) == tags


@given(data=spans_and_length(), source=st.sampled_from(SCHEME_NAMES))
def test_convert_between_all_schemes(data: tuple[list[Span], int], source: str) -> None:
    spans, n = data
    tags = get_scheme(source).spans_to_tags(spans, n)
    for target in SCHEME_NAMES:
        converted = convert_tags(tags, source, target)
        assert converted == get_scheme(target).spans_to_tags(spans, n)
        assert convert_tags(converted, target, source) == tags


def test_letters_per_scheme() -> None:
    spans = [(0, 1, "X"), (1, 4, "X"), (5, 7, "Y")]
    expected = {
        "IOB1": ["I-X", "B-X", "I-X", "I-X", "O", "I-Y", "I-Y"],
        "BIO": ["B-X", "B-X", "I-X", "I-X", "O", "B-Y", "I-Y"],
        "BILUO": ["U-X", "B-X", "I-X", "L-X", "O", "B-Y", "L-Y"],
        "BIOES": ["S-X", "B-X", "I-X", "E-X", "O", "B-Y", "E-Y"],
        "BMES": ["S-X", "B-X", "M-X", "E-X", "O", "B-Y", "E-Y"],
        "BMEWO": ["W-X", "B-X", "M-X", "E-X", "O", "B-Y", "E-Y"],
    }
    assert set(expected) == set(SCHEME_NAMES)
    for name, tags in expected.items():
        assert get_scheme(name).spans_to_tags(spans, 7) == tags
        assert get_scheme(name).tags_to_spans(tags) == spans


# --------------------------------------------------------------------- IOB1 <-> BIO
@pytest.mark.parametrize(
    ("iob1", "bio"),
    [
        # adjacent entities of the same type: only the second gets B- in IOB1
        (["I-PER", "B-PER"], ["B-PER", "B-PER"]),
        (["I-PER", "I-PER", "B-PER", "I-PER"], ["B-PER", "I-PER", "B-PER", "I-PER"]),
        (["I-PER", "B-PER", "B-PER"], ["B-PER", "B-PER", "B-PER"]),
        # adjacent entities of different types: I- suffices in IOB1
        (["I-PER", "I-LOC"], ["B-PER", "B-LOC"]),
        (["I-ORG", "I-ORG", "I-LOC", "I-LOC"], ["B-ORG", "I-ORG", "B-LOC", "I-LOC"]),
        # single-token entities and entities at the edges
        (["O", "I-MISC", "O"], ["O", "B-MISC", "O"]),
        (["I-MISC"], ["B-MISC"]),
        (["O", "I-PER", "O", "I-PER"], ["O", "B-PER", "O", "B-PER"]),
        (["O", "O"], ["O", "O"]),
        ([], []),
    ],
)
def test_iob1_bio_conversion(iob1: list[str], bio: list[str]) -> None:
    assert convert_tags(iob1, "IOB1", "BIO") == bio
    assert convert_tags(bio, "BIO", "IOB1") == iob1
    assert convert_tags(bio, "iob2", "iob1") == iob1


def test_iob1_rejects_b_that_does_not_follow_same_type() -> None:
    iob1 = get_scheme("IOB1")
    for tags in (["B-PER"], ["O", "B-PER"], ["I-LOC", "B-PER"]):
        with pytest.raises(InvalidTagSequence) as info:
            iob1.tags_to_spans(tags)
        assert info.value.position == len(tags) - 1
        assert info.value.tag == "B-PER"
        # Repaired, B- still starts an entity (conlleval).
        assert iob1.tags_to_spans(tags, strict=False)[-1] == (len(tags) - 1, len(tags), "PER")


# ------------------------------------------------------------- errors and validation
def test_invalid_tag_sequence_names_position_and_tag() -> None:
    with pytest.raises(InvalidTagSequence) as info:
        get_scheme("BIO").tags_to_spans(["B-LOC", "I-LOC", "O", "I-PER", "O"])
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.position, err.tag) == (3, "I-PER")
    assert str(err).startswith("position 3: 'I-PER' after 'O' is not a valid BIO sequence")


@pytest.mark.parametrize(
    ("name", "tags", "problems"),
    [
        ("BIO", ["I-X"], [(0, "'I-X' at the start")]),
        ("BIO", ["B-X", "I-Y"], [(1, "'I-Y' after 'B-X'")]),
        ("BIO", ["B-X", "Q-X", "I-X"], [(1, "'Q-X' is not a BIO tag")]),
        ("BIO", ["B-X", "B-", "O", "BX"], [(1, "'B-'"), (3, "'BX'")]),
        ("BILUO", ["B-X"], [(0, "'B-X' at the end")]),
        ("BILUO", ["B-X", "O"], [(1, "'O' after 'B-X'")]),
        ("BILUO", ["O", "L-X", "U-X", "B-X", "I-X"], [(1, "'L-X' after 'O'"), (4, "'I-X' at")]),
        ("BILUO", ["B-X", "L-Y"], [(1, "'L-Y' after 'B-X'")]),
        ("BILUO", ["E-X"], [(0, "'E-X' is not a BILUO tag")]),
        ("BIOES", ["I-X", "E-X"], [(0, "'I-X' at the start")]),
        ("BIOES", ["B-X", "B-X", "E-X"], [(1, "'B-X' after 'B-X'")]),
        ("BMES", ["B-X", "I-X", "E-X"], [(1, "'I-X' is not a BMES tag")]),
        ("BMEWO", ["S-X"], [(0, "'S-X' is not a BMEWO tag")]),
        ("IOB1", ["I-X", "I-Y", "B-X"], [(2, "'B-X' after 'I-Y'")]),
        ("BIO", ["O", "B-X", "I-X"], []),
    ],
)
def test_validate_reports_every_problem(name: str, tags: list[str], problems: list) -> None:
    scheme = get_scheme(name)
    found = scheme.validate(tags)
    assert [pos for pos, _ in found] == [pos for pos, _ in problems]
    for (_, message), (_, expected) in zip(found, problems, strict=True):
        assert expected in message
        assert name in message
    if problems:
        with pytest.raises(InvalidTagSequence) as info:
            scheme.tags_to_spans(tags)
        assert info.value.position == problems[0][0]
        assert info.value.tag == tags[problems[0][0]]
        assert f"position {problems[0][0]}: " in str(info.value)
    else:
        scheme.tags_to_spans(tags)


# -------------------------------------------------------------- non-strict (conlleval)
@pytest.mark.parametrize(
    ("name", "tags", "spans"),
    [
        # BIO: an I- after O or after another type starts an entity
        ("BIO", ["O", "I-PER", "I-PER", "O"], [(1, 3, "PER")]),
        ("BIO", ["B-LOC", "I-PER", "I-PER"], [(0, 1, "LOC"), (1, 3, "PER")]),
        ("BIO", ["I-PER"], [(0, 1, "PER")]),
        # BILUO: a B without L ends where the next tag does not continue it
        ("BILUO", ["B-PER", "O", "U-LOC"], [(0, 1, "PER"), (2, 3, "LOC")]),
        ("BILUO", ["B-PER", "I-PER", "B-PER", "L-PER"], [(0, 2, "PER"), (2, 4, "PER")]),
        ("BILUO", ["B-PER", "I-PER"], [(0, 2, "PER")]),
        ("BILUO", ["B-PER", "L-LOC"], [(0, 1, "PER"), (1, 2, "LOC")]),
        # an L/E without B is a single-token entity; after L, an I starts a new entity
        ("BILUO", ["O", "L-PER", "I-PER", "L-PER"], [(1, 2, "PER"), (2, 4, "PER")]),
        ("BIOES", ["E-PER", "E-PER"], [(0, 1, "PER"), (1, 2, "PER")]),
        ("BIOES", ["S-PER", "I-PER", "O"], [(0, 1, "PER"), (1, 2, "PER")]),
        # unknown tags count as O
        ("BIO", ["B-PER", "Z-PER", "I-PER", "??"], [(0, 1, "PER"), (2, 3, "PER")]),
    ],
)
def test_non_strict_repair(name: str, tags: list[str], spans: list[Span]) -> None:
    scheme = get_scheme(name)
    assert scheme.tags_to_spans(tags, strict=False) == spans
    with pytest.raises(InvalidTagSequence):
        scheme.tags_to_spans(tags)


# seqeval's get_entities is a port of conlleval's startOfChunk/endOfChunk; it knows the
# letters B, I, E, S, so other letters are mapped onto them.
_TO_CONLLEVAL = {
    "IOB1": {},
    "BIO": {},
    "BILUO": {"L": "E", "U": "S"},
    "BIOES": {},
    "BMES": {"M": "I"},
    "BMEWO": {"M": "I", "W": "S"},
}


@pytest.mark.skipif(seqeval_entities is None, reason="seqeval is not installed")
@settings(max_examples=300)
@given(name=st.sampled_from(SCHEME_NAMES), data=st.data())
def test_non_strict_matches_conlleval(name: str, data: st.DataObject) -> None:
    scheme = get_scheme(name)
    alphabet = scheme.tag_names(["X", "Y"])
    tags = data.draw(st.lists(st.sampled_from(alphabet), max_size=10))
    mapping = _TO_CONLLEVAL[name]
    mapped = [mapping.get(t[0], t[0]) + t[1:] for t in tags]
    expected = [(s, e + 1, lab) for lab, s, e in seqeval_entities(mapped)]
    assert scheme.tags_to_spans(tags, strict=False) == sorted(expected)


@given(
    name=st.sampled_from(SCHEME_NAMES),
    tags=st.lists(
        st.one_of(st.sampled_from(["O", "-", "B", "B-", "I-X", "L-X", "U-Y", "M-X"]), st.text()),
        max_size=8,
    ),
)
def test_non_strict_never_raises(name: str, tags: list[str]) -> None:
    scheme = get_scheme(name)
    spans = scheme.tags_to_spans(tags, strict=False)
    # The repaired spans are well formed: they encode without error.
    assert len(scheme.spans_to_tags(spans, len(tags))) == len(tags)


def test_non_strict_ignores_non_string_tags() -> None:
    assert get_scheme("BIO").tags_to_spans([None, "B-X", 3], strict=False) == [(1, 2, "X")]


def test_spans_to_tags_errors_name_the_span() -> None:
    bio = get_scheme("BIO")
    with pytest.raises(ValueError, match=r"\(1, 3, 'B'\).*overlap"):
        bio.spans_to_tags([(0, 2, "A"), (1, 3, "B")], 4)
    with pytest.raises(ValueError, match=r"\(2, 2, 'A'\).*empty"):
        bio.spans_to_tags([(2, 2, "A")], 4)
    with pytest.raises(ValueError, match=r"\(3, 5, 'A'\).*out of range"):
        bio.spans_to_tags([(3, 5, "A")], 4)
    with pytest.raises(ValueError, match=r"\(-1, 1, 'A'\).*out of range"):
        bio.spans_to_tags([(-1, 1, "A")], 4)
    with pytest.raises(ValueError, match=r"\(0, 1, 'O'\)"):
        bio.spans_to_tags([(0, 1, "O")], 4)
    assert bio.spans_to_tags([(np.int64(0), np.int64(2), "A")], 2) == ["B-A", "I-A"]


# ------------------------------------------------------------------- CRF transitions
@pytest.mark.parametrize("name", SCHEME_NAMES)
@pytest.mark.parametrize("labels", [["X"], ["X", "Y"]])
def test_allowed_transitions_brute_force(name: str, labels: list[str]) -> None:
    scheme = get_scheme(name)
    names = scheme.tag_names(labels)
    trans, start, end = scheme.allowed_transitions(names)
    k = len(names)
    assert trans.shape == (k, k) and start.shape == (k,) and end.shape == (k,)
    assert trans.dtype == start.dtype == end.dtype == np.bool_
    n_valid = 0
    for length in range(1, 5):
        for idx in itertools.product(range(k), repeat=length):
            tags = [names[i] for i in idx]
            allowed = bool(start[idx[0]] and end[idx[-1]])
            allowed = allowed and all(trans[a, b] for a, b in itertools.pairwise(idx))
            try:
                spans = scheme.tags_to_spans(tags, strict=True)
                decoded = True
            except InvalidTagSequence:
                decoded = False
            assert allowed == decoded, tags
            assert (scheme.validate(tags) == []) == decoded, tags
            if decoded:
                n_valid += 1
                # Every valid sequence is the one encoding of its spans, so the CRF
                # never spreads probability over two tag sequences for one entity set.
                assert scheme.spans_to_tags(spans, length) == tags
                assert scheme.tags_to_spans(tags, strict=False) == spans
    assert 0 < n_valid < sum(k**n for n in range(1, 5))


def test_allowed_transitions_iob1_b_only_after_same_type() -> None:
    iob1 = get_scheme("IOB1")
    names = iob1.tag_names(["X", "Y"])  # O, B-X, I-X, B-Y, I-Y
    trans, start, end = iob1.allowed_transitions(names)
    into_bx = {names[i] for i in np.flatnonzero(trans[:, names.index("B-X")])}
    assert into_bx == {"B-X", "I-X"}
    assert not start[names.index("B-X")] and start[names.index("I-X")]
    assert end.all()


def test_allowed_transitions_rejects_foreign_tags() -> None:
    with pytest.raises(ValueError, match="'L-X'"):
        get_scheme("BIO").allowed_transitions(["O", "B-X", "L-X"])


# ------------------------------------------------------------------ scheme detection
CONLL_IOB1 = [
    ["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O"],
    ["I-PER", "I-PER"],
    ["O", "I-LOC", "B-LOC", "O", "I-PER", "I-ORG"],
]


def _corpus(name: str) -> list[list[str]]:
    scheme = get_scheme(name)
    docs = [
        ([(0, 1, "ORG"), (2, 3, "MISC"), (6, 7, "MISC")], 9),
        ([(0, 2, "PER")], 2),
        ([(1, 2, "LOC"), (2, 3, "LOC"), (4, 5, "PER"), (5, 8, "ORG")], 9),
    ]
    return [scheme.spans_to_tags(spans, n) for spans, n in docs]


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_detect_scheme_on_each_scheme(name: str) -> None:
    corpus = _corpus(name)
    assert detect_scheme(corpus) == get_scheme(name)
    assert detect_scheme(iter(corpus)).name == name  # a one-pass iterable is enough


def test_detect_scheme_conll_2003_style() -> None:
    assert detect_scheme(CONLL_IOB1).name == "IOB1"
    assert convert_tags(CONLL_IOB1[2], "IOB1", "BIO")[1:3] == ["B-LOC", "B-LOC"]


def test_detect_scheme_conll_2003_with_a_stray_b_after_o() -> None:
    # CoNLL-2003 eng.train is IOB1 with two B-MISC after O (lines 152428 and 175436); read
    # as BIO every I- that opens an entity would be invalid, read as IOB1 only the stray B-.
    corpus = [*CONLL_IOB1, ["O", "B-MISC", "I-MISC", "O", "I-LOC"]]
    iob1, bio = get_scheme("IOB1"), get_scheme("BIO")
    assert sum(len(iob1.validate(tags)) for tags in corpus) == 1
    assert sum(len(bio.validate(tags)) for tags in corpus) == 8
    assert detect_scheme(corpus).name == "IOB1"
    assert detect_scheme(iter(corpus)).name == "IOB1"  # still a single pass


@pytest.mark.parametrize(
    ("corpus", "name"),
    [
        ([["O", "O"]], "BIO"),  # no entities: BIO by default
        ([], "BIO"),
        ([["B-X", "I-X"]], "BIO"),  # no I- opening an entity
        ([["O", "I-X", "I-X"], ["B-Y", "O"]], "BIO"),  # 1 invalid either way: a tie is BIO
        ([["I-X", "O", "B-X"], ["O", "I-Y"]], "IOB1"),  # IOB1 1 invalid, BIO 2
        ([["B-X", "I-X", "O", "I-Y"], ["B-Y"]], "BIO"),  # BIO 1 invalid, IOB1 2
        ([["Z-X", "I-X"]], "BIO"),  # Z-X is unknown: no evidence across it, a tie
        ([["I-X", "I-X", "O"]], "IOB1"),
        ([["I-X", "-", "B-X"]], "IOB1"),  # no evidence is taken across missing tags
        ([["U-X", "O"], ["B-X", "E-X"]], "BILUO"),  # L-/U- win over E-/S-
        ([["S-X", "B-X", "E-X"]], "BIOES"),
        ([["B-X", "M-X", "E-X"], ["S-X"]], "BMES"),
        ([["B-X", "M-X", "E-X"], ["W-X"]], "BMEWO"),
        ([["W-X", "O"]], "BMEWO"),
    ],
)
def test_detect_scheme_rules(corpus: list[list[str]], name: str) -> None:
    assert detect_scheme(corpus).name == name


# -------------------------------------------------------------- names and labels
def test_tag_names_order() -> None:
    assert get_scheme("BILUO").tag_names(["PER", "LOC", "PER"]) == [
        "O",
        "B-LOC",
        "I-LOC",
        "L-LOC",
        "U-LOC",
        "B-PER",
        "I-PER",
        "L-PER",
        "U-PER",
    ]
    assert get_scheme("BIO").tag_names(["b", "a"]) == ["O", "B-a", "I-a", "B-b", "I-b"]
    assert get_scheme("IOB1").tag_names(["X"]) == ["O", "B-X", "I-X"]
    assert get_scheme("BIOES").tag_names(["X"]) == ["O", "B-X", "I-X", "E-X", "S-X"]
    assert get_scheme("BMES").tag_names(["X"]) == ["O", "B-X", "M-X", "E-X", "S-X"]
    assert get_scheme("BMEWO").tag_names(["X"]) == ["O", "B-X", "M-X", "E-X", "W-X"]
    assert get_scheme("BIO").tag_names([]) == ["O"]


@pytest.mark.parametrize("label", ["", "O", "-", "NEW YORK", "A\tB", None, 3])
def test_tag_names_rejects_bad_labels(label: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"label {label!r}")):
        get_scheme("BIO").tag_names(["PER", label])  # type: ignore[list-item]


def test_get_scheme_names_and_aliases() -> None:
    assert SCHEME_NAMES == ("IOB1", "BIO", "BILUO", "BIOES", "BMES", "BMEWO")
    for name in SCHEME_NAMES:
        assert get_scheme(name.lower()).name == name
    assert get_scheme("iob2") == get_scheme("BIO") == TagScheme("Bio")
    assert get_scheme("BILOU").name == "BILUO"
    assert get_scheme("iobes").name == "BIOES"
    scheme = get_scheme("bmes")
    assert get_scheme(scheme) is scheme
    assert len({get_scheme(n) for n in SCHEME_NAMES}) == len(SCHEME_NAMES)


def test_get_scheme_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="'IOBX'") as info:
        get_scheme("IOBX")
    for name in SCHEME_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="known schemes"):
        TagScheme("nope")


# ----------------------------------------------------------- spaCy BILUO with gaps
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BIO", [None, "I-X", "I-X", "O", "B-Y", None, "B-Z", "I-Z", None, "B-A"]),
        ("IOB1", [None, "I-X", "I-X", "O", "I-Y", None, "I-Z", "I-Z", None, "I-A"]),
        ("BILUO", [None, "I-X", "L-X", "O", "B-Y", None, "B-Z", "I-Z", None, "U-A"]),
        ("BIOES", [None, "I-X", "E-X", "O", "B-Y", None, "B-Z", "I-Z", None, "S-A"]),
        ("BMEWO", [None, "M-X", "E-X", "O", "B-Y", None, "B-Z", "M-Z", None, "W-A"]),
    ],
)
def test_biluo_to_scheme_with_gaps(name: str, expected: list[str | None]) -> None:
    biluo = ["-", "I-X", "L-X", "O", "B-Y", None, "B-Z", "I-Z", "-", "U-A"]
    assert biluo_to_scheme(biluo, name) == expected


def test_biluo_to_scheme_single_token_between_gaps() -> None:
    assert biluo_to_scheme(["-", "I-X", "-"], "BIO") == [None, "I-X", None]
    assert biluo_to_scheme(["-", "L-X", "-"], "BIO") == [None, "I-X", None]
    assert biluo_to_scheme(["-", "B-X", "-"], "BIO") == [None, "B-X", None]
    assert biluo_to_scheme(["-", "L-X", "-"], "BILUO") == [None, "L-X", None]
    assert biluo_to_scheme(["-", "I-X", "-"], "BIOES") == [None, "I-X", None]
    assert biluo_to_scheme(["-", "U-X", "-"], "BIOES") == [None, "S-X", None]
    assert biluo_to_scheme([], "BIO") == []
    assert biluo_to_scheme(["-", None], "BIO") == [None, None]


@given(data=spans_and_length(["X", "Y"]), name=st.sampled_from(SCHEME_NAMES), draw=st.data())
def test_biluo_to_scheme_masked_matches_full_conversion(
    data: tuple[list[Span], int], name: str, draw: st.DataObject
) -> None:
    spans, n = data
    full_biluo = get_scheme("BILUO").spans_to_tags(spans, n)
    target = get_scheme(name)
    full = target.spans_to_tags(spans, n)
    assert biluo_to_scheme(full_biluo, name) == full
    gaps = draw.draw(st.lists(st.sampled_from([False, False, "-", None]), min_size=n, max_size=n))
    masked = [tag if gap is False else gap for tag, gap in zip(full_biluo, gaps, strict=True)]
    out = biluo_to_scheme(masked, name)
    assert len(out) == n
    for i, tag in enumerate(masked):
        if tag is None or tag == "-":
            assert out[i] is None
        elif name == "IOB1" and full[i].startswith("B-") and i > 0 and out[i - 1] is None:
            # Whether the gap holds an entity of the same type is unknown: I- is the default.
            assert out[i] == "I-" + full[i][2:]
        else:
            # Visible tags of an entity cut by a gap are those of the whole entity.
            assert out[i] == full[i]


def test_biluo_to_scheme_from_spacy_example() -> None:
    pytest.importorskip("spacy")
    from spacy.tokens import Doc
    from spacy.training import Example
    from spacy.vocab import Vocab

    vocab = Vocab()  # not spacy.blank: no language or plugin entry points needed
    words = ["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London"]
    gold = ["B-PER", "L-PER", "O", "-", "-", "O", "U-GPE"]
    example = Example.from_dict(Doc(vocab, words=words), {"entities": gold})
    aligned = example.get_aligned_ner()  # spaCy reports missing annotation as None
    assert aligned == ["B-PER", "L-PER", "O", None, None, "O", "U-GPE"]
    assert biluo_to_scheme(aligned, "BIO") == ["B-PER", "I-PER", "O", None, None, "O", "B-GPE"]
    assert biluo_to_scheme(aligned, "IOB1") == ["I-PER", "I-PER", "O", None, None, "O", "I-GPE"]
    # A predicted token across an entity boundary is misaligned (None); a split one is not.
    reference = Doc(
        vocab, words=words, ents=["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-GPE"]
    )
    predicted = Doc(vocab, words=["Ada", "Lovelacemet", "Charles", "Bab", "bage", "in", "London"])
    aligned = Example(predicted, reference).get_aligned_ner()
    assert aligned[:2] == [None, None]
    assert biluo_to_scheme(aligned, "BIOES") == [
        None,
        None,
        "B-PER",
        "I-PER",
        "E-PER",
        "O",
        "S-GPE",
    ]
