"""Tests for spacy_crf_ner.convert: column files to DocBins, on small hand-made files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from spacy.tokens import Doc, DocBin

from spacy_crf_ner.convert import (
    DEFAULT_N_SENTS,
    ConversionError,
    blank_vocab,
    convert_files,
    output_path,
    print_report,
    read_column_file,
)
from spacy_crf_ner.tags import TagScheme

ROOT = Path(__file__).resolve().parents[1]
DOCSTART = "-DOCSTART- -X- -X- O"


def write(directory: Path, name: str, text: str) -> Path:
    """Write a UTF-8 file (LF line endings as given) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def column_text(sentences: list[list[tuple[str, str]]], sep: str = " ") -> str:
    """Sentences of (token, tag) as a column file with blank lines between sentences."""
    return "".join("".join(f"{t}{sep}{tag}\n" for t, tag in s) + "\n" for s in sentences)


def ents(doc: Doc) -> list[tuple[int, int, str]]:
    return [(e.start, e.end, e.label_) for e in doc.ents]


def sent_lengths(doc: Doc) -> list[int]:
    return [len(s) for s in doc.sents]


# ------------------------------------------------------------------------ schemes
WORDS = ["Anna", "Maria", "Lopez", "Kim", "in", "New", "York"]
SPANS = [(0, 3, "PER"), (3, 4, "PER"), (5, 7, "LOC")]  # adjacent PER entities
SCHEMES = [
    # (scheme used to write the tags, name detect should report, alias for --scheme)
    ("IOB1", "IOB1", "iob1"),
    ("BIO", "BIO", "IOB2"),
    ("BIOES", "BIOES", "IOBES"),
    ("BILUO", "BILUO", "BILOU"),
    ("BMES", "BMES", "bmes"),
    ("BMEWO", "BMEWO", "BMEWO"),
]


@pytest.mark.parametrize(("scheme", "detected", "alias"), SCHEMES)
def test_each_scheme_detected_and_decoded(
    tmp_path: Path, scheme: str, detected: str, alias: str
) -> None:
    tags = TagScheme(scheme).spans_to_tags(SPANS, len(WORDS))
    path = write(tmp_path, f"x.{scheme}", column_text([list(zip(WORDS, tags, strict=True))]))
    auto = read_column_file(path)
    assert (auto.scheme, auto.scheme_detected) == (detected, True)
    assert [t.text for t in auto.docs[0]] == WORDS
    assert ents(auto.docs[0]) == SPANS
    assert auto.repairs == []
    given = read_column_file(path, scheme=alias, strict=True)
    assert (given.scheme, given.scheme_detected) == (detected, False)
    assert ents(given.docs[0]) == SPANS


def test_iob1_with_a_b_after_o_is_still_iob1(tmp_path: Path) -> None:
    # CoNLL-2003 eng.train: IOB1, but two B-MISC follow O. detect_scheme picks IOB1 (fewer
    # invalid positions than BIO, where every I- opening an entity is invalid); 1 repair.
    sentences = [
        [("EU", "I-ORG"), ("rejects", "O"), ("German", "I-MISC"), ("call", "O")],
        [("Peter", "I-PER"), ("Blackburn", "I-PER")],
        [("in", "O"), ("Atlanta", "B-MISC"), ("style", "O")],
    ]
    path = write(tmp_path, "eng.train", column_text(sentences))
    result = read_column_file(path)
    assert result.scheme == "IOB1"
    assert [str(p).split(": ")[0] for p in result.repairs] == [f"{path}:10"]
    assert result.stats.entities == {"ORG": 1, "MISC": 2, "PER": 1}


def test_tag_is_last_column_any_whitespace(tmp_path: Path) -> None:
    text = "EU NNP B-NP B-ORG\nrejects\tVBZ  B-VP   O\nBonn NNP\tB-NP\tB-LOC \n\n"
    result = read_column_file(write(tmp_path, "four.col", text))
    doc = result.docs[0]
    assert [t.text for t in doc] == ["EU", "rejects", "Bonn"]
    assert ents(doc) == [(0, 1, "ORG"), (2, 3, "LOC")]


def test_labels_are_kept_as_in_the_corpus(tmp_path: Path) -> None:
    text = "雯0\tB-PER.NAM\n子1\tI-PER.NAM\n的0\tO\n记0\tB-PER.NOM\n者1\tI-PER.NOM\n\n"
    result = read_column_file(write(tmp_path, "w.bio", text), lang="zh", strip_digit=True)
    assert ents(result.docs[0]) == [(0, 2, "PER.NAM"), (3, 5, "PER.NOM")]
    assert result.stats.entities == {"PER.NAM": 1, "PER.NOM": 1}


def test_tokens_outside_entities_are_annotated_o(tmp_path: Path) -> None:
    # Missing ("") instead of O would make spaCy treat those tokens as unannotated.
    result = read_column_file(write(tmp_path, "a.iob", "a O\nb B-X\n\nc O\n\n"), n_sents=0)
    assert [t.ent_iob_ for t in result.docs[0]] == ["O", "B", "O"]


# --------------------------------------------------------------- documents, sentences
def docstart_file(tmp_path: Path, docstart: str = DOCSTART) -> Path:
    """Doc A: 3 sentences; doc B: 2 sentences (no blank line after its DOCSTART)."""
    text = (
        f"{docstart}\n\n"
        "a1 B-PER\na2 O\n\nb1 O\n\nc1 O\nc2 B-LOC\nc3 I-LOC\n\n"
        f"{docstart}\n"
        "d1 B-ORG\n\ne1 O\ne2 O\n\n"
    )
    return write(tmp_path, "docs.iob", text)


@pytest.mark.parametrize("docstart", [DOCSTART, "-DOCSTART- -X- O O", "-DOCSTART-\tO"])
def test_docstart_starts_a_doc_and_is_never_a_token(tmp_path: Path, docstart: str) -> None:
    result = read_column_file(docstart_file(tmp_path, docstart), scheme="BIO", strict=True)
    assert len(result.docs) == 2
    assert all("-DOCSTART-" not in t.text for doc in result.docs for t in doc)
    assert [sent_lengths(d) for d in result.docs] == [[2, 1, 3], [1, 2]]
    assert [t.is_sent_start for t in result.docs[0]] == [True, False, True, True, False, False]
    assert ents(result.docs[0]) == [(0, 1, "PER"), (4, 6, "LOC")]
    assert result.n_sents == 0
    assert (result.stats.docs, result.stats.source_documents) == (2, 2)
    assert (result.stats.sentences, result.stats.tokens) == (5, 9)


@pytest.mark.parametrize(
    ("n_sents", "expected"),
    [(None, [[2, 1, 3], [1, 2]]), (0, [[2, 1, 3], [1, 2]]), (2, [[2, 1], [3], [1, 2]]),
     (1, [[2], [1], [3], [1], [2]]), (10, [[2, 1, 3], [1, 2]])],
)  # fmt: skip
def test_n_sents_never_crosses_docstart(
    tmp_path: Path, n_sents: int | None, expected: list[list[int]]
) -> None:
    result = read_column_file(docstart_file(tmp_path), n_sents=n_sents)
    assert [sent_lengths(d) for d in result.docs] == expected
    assert result.stats.docs == len(expected)


def test_sentences_before_the_first_docstart_are_a_doc(tmp_path: Path) -> None:
    text = f"x O\n\n{DOCSTART}\n\ny O\n\n{DOCSTART}\n\n{DOCSTART}\n\nz O\n"
    result = read_column_file(write(tmp_path, "pre.iob", text))
    assert [[t.text for t in d] for d in result.docs] == [["x"], ["y"], ["z"]]
    assert (result.stats.source_documents, result.stats.empty_documents) == (3, 1)


@pytest.mark.parametrize(
    ("n_sents", "sizes"),
    [(None, [DEFAULT_N_SENTS, DEFAULT_N_SENTS, 5]), (0, [25]), (1, [1] * 25), (12, [12, 12, 1])],
)
def test_files_without_docstart_group_sentences(
    tmp_path: Path, n_sents: int | None, sizes: list[int]
) -> None:
    sentences = [[(f"w{i}", "O")] for i in range(25)]
    result = read_column_file(write(tmp_path, "flat.bio", column_text(sentences)), n_sents=n_sents)
    assert [len(list(d.sents)) for d in result.docs] == sizes
    assert result.n_sents == (DEFAULT_N_SENTS if n_sents is None else n_sents)


def test_negative_n_sents_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_sents"):
        read_column_file(write(tmp_path, "a.bio", "a O\n"), n_sents=-1)


def test_whitespace_only_lines_separate_sentences(tmp_path: Path) -> None:
    text = "a B-X\r\nb I-X\r\n\t\r\nc O\n   \n\n\nd B-Y\n \t \ne O"  # no final newline
    result = read_column_file(write(tmp_path, "ws.bio", text), n_sents=0, strict=True)
    doc = result.docs[0]
    assert sent_lengths(doc) == [2, 1, 1, 1]
    assert [t.text for t in doc] == ["a", "b", "c", "d", "e"]
    assert ents(doc) == [(0, 2, "X"), (3, 4, "Y")]


def test_entities_never_cross_sentences(tmp_path: Path) -> None:
    # Resume NER train.char.bmes: an ORG runs across a sentence break (M- ... | M- ...).
    text = "恒 B-ORG\n生 M-ORG\n\n银 M-ORG\n行 E-ORG\n\n"
    result = read_column_file(write(tmp_path, "r.bmes", text), lang="zh", n_sents=0)
    assert ents(result.docs[0]) == [(0, 2, "ORG"), (2, 4, "ORG")]
    assert (result.stats.repaired_sequences, result.stats.repaired_positions) == (2, 2)
    assert [p.line for p in result.repairs] == [2, 4]


# ------------------------------------------------------------------------- languages
def test_only_ascii_whitespace_separates_columns(tmp_path: Path) -> None:
    # A full-width space is a character of a Chinese text, and a token of its own.
    text = "北\tB-LOC\n京\tE-LOC\n\u3000\tO\n\u00a0 O\n好\u3000x\tO\n"
    doc = read_column_file(write(tmp_path, "fw.bmes", text), lang="zh").docs[0]
    assert [t.text for t in doc] == ["北", "京", "\u3000", "\u00a0", "好\u3000x"]
    with pytest.raises(ConversionError, match=r"lone\.bio:2: 1 column"):
        read_column_file(write(tmp_path, "lone.bio", "a O\n\u3000\n"))


def test_english_docs_have_spaces_between_tokens(tmp_path: Path) -> None:
    text = "Anna B-PER\nsings O\n\nBob B-PER\nlistens O\n.  O\n\n"
    doc = read_column_file(write(tmp_path, "en.bio", text), n_sents=0).docs[0]
    assert doc.text == "Anna sings Bob listens ."
    assert [t.whitespace_ for t in doc] == [" ", " ", " ", " ", ""]


def test_chinese_docs_have_one_token_per_char_and_no_spaces(tmp_path: Path) -> None:
    text = "北 B-LOC\n京 E-LOC\n欢 O\n迎 O\n\n你 S-PER\n\n"
    result = read_column_file(write(tmp_path, "zh.bmes", text), lang="zh")
    doc = result.docs[0]
    assert doc.text == "北京欢迎你"
    assert [t.text for t in doc] == list("北京欢迎你")
    assert all(t.whitespace_ == "" for t in doc)
    assert doc.vocab.lang == "zh"
    assert ents(doc) == [(0, 2, "LOC"), (4, 5, "PER")]
    assert not result.all_tokens_end_in_digit


def test_blank_vocab_for_zh_needs_no_word_segmenter() -> None:
    from spacy.lang.zh import Chinese

    assert blank_vocab("zh").lang == "zh"
    assert blank_vocab("zh").writing_system == Chinese.Defaults.writing_system
    # spacy.blank("zh") segments characters unless told otherwise: no jieba/pkuseg.
    assert Chinese.default_config["nlp"]["tokenizer"]["segmenter"] == "char"
    with pytest.raises(ConversionError, match="--lang 'xx-nope'"):
        blank_vocab("xx-nope")


def test_strip_digit_removes_weibo_positions(tmp_path: Path) -> None:
    text = "科0\tB-ORG.NOM\n技1\tI-ORG.NOM\n80\tO\n011\tO\np10\tO\n\ufffd\ufffd0\tO\n\n"
    path = write(tmp_path, "weibo.train", text)
    raw = read_column_file(path, lang="zh")
    assert raw.all_tokens_end_in_digit
    assert [t.text for t in raw.docs[0]] == ["科0", "技1", "80", "011", "p10", "\ufffd\ufffd0"]
    stripped = read_column_file(path, lang="zh", strip_digit=True)
    assert not stripped.all_tokens_end_in_digit  # the hint is only for unstripped data
    assert [t.text for t in stripped.docs[0]] == ["科", "技", "8", "0", "p", "\ufffd\ufffd"]
    assert stripped.docs[0].text == "科技80p\ufffd\ufffd"
    assert ents(stripped.docs[0]) == [(0, 2, "ORG.NOM")]


def test_strip_digit_refuses_tokens_without_a_position(tmp_path: Path) -> None:
    path = write(tmp_path, "w.bio", "科0\tO\n技\tO\n\n5\tO\n")
    with pytest.raises(ConversionError) as info:
        read_column_file(path, lang="zh", strip_digit=True)
    assert [p.line for p in info.value.problems] == [2, 4]
    assert f"{path}:2: --strip-digit: token '技'" in str(info.value)


def test_digit_hint_is_only_given_when_every_token_ends_in_a_digit(tmp_path: Path) -> None:
    assert not read_column_file(write(tmp_path, "a.bio", "科0 O\n技 O\n")).all_tokens_end_in_digit


# ------------------------------------------------------------------------ invalid data
INVALID = [
    # (scheme, text, line of the first problem, words in the message)
    ("BIO", "Anna O\nMaria I-PER\nsings O\n", 2, "'I-PER' after 'O'"),
    ("BIO", "Maria I-PER\n", 1, "'I-PER' at the start"),
    ("BIOES", "a O\nb E-PER\n", 2, "'E-PER' after 'O'"),
    ("BIOES", "a B-PER\nb O\n", 2, "'O' after 'B-PER'"),
    ("BIOES", "a O\nb B-PER\n", 2, "at the end of the sequence"),
    ("BMES", "a M-ORG\nb E-ORG\n", 1, "'M-ORG' at the start"),
    ("BIO", "a O\nb X-PER\n", 2, "'X-PER' is not a BIO tag"),
    ("BIO", "a O\nb PER\n", 2, "'PER' is not a BIO tag"),
]


@pytest.mark.parametrize(("scheme", "text", "line", "words"), INVALID)
def test_strict_fails_with_file_and_line(
    tmp_path: Path, scheme: str, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(ConversionError) as info:
        read_column_file(path, scheme=scheme, strict=True)
    assert f"{path}:{line}: " in str(info.value)
    assert words in str(info.value)
    assert "--strict" in str(info.value)
    assert info.value.problems[0].line == line


@pytest.mark.parametrize(("scheme", "text", "line", "words"), INVALID)
def test_default_repairs_and_reports(
    tmp_path: Path, scheme: str, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, "bad.txt", text)
    result = read_column_file(path, scheme=scheme)
    assert result.repairs and result.repairs[0].line == line
    assert words in str(result.repairs[0])
    assert str(result.repairs[0]).startswith(f"{path}:{line}: ")
    assert result.stats.repaired_sequences == 1
    expected = TagScheme(scheme).tags_to_spans(
        [ln.split()[-1] for ln in text.splitlines()], strict=False
    )
    assert ents(result.docs[0]) == expected


def test_repair_counts_sequences_and_positions(tmp_path: Path) -> None:
    text = "a I-X\nb O\nc I-Y\n\nd O\n\ne I-X\nf B-X\n\n"  # 3 invalid I- in 2 sentences
    result = read_column_file(write(tmp_path, "c.bio", text), scheme="BIO")
    assert (result.stats.repaired_sequences, result.stats.repaired_positions) == (2, 3)
    assert [p.line for p in result.repairs] == [1, 3, 7]
    assert result.stats.entities == {"X": 3, "Y": 1}  # I- starts an entity, as conlleval


def test_wrong_column_count_is_always_an_error(tmp_path: Path) -> None:
    text = "EU NNP B-ORG\nrejects VBZ O\n\nNew York NNP B-LOC\nBonn B-LOC\nx\tNN\tO\n"
    path = write(tmp_path, "cols.txt", text)
    for strict in (False, True):
        with pytest.raises(ConversionError) as info:
            read_column_file(path, strict=strict)
        assert [p.line for p in info.value.problems] == [4, 5]
        message = str(info.value)
        assert f"{path}:4: 4 columns, but the first token line (line 1) has 3" in message
        assert f"{path}:5: 2 columns" in message
        assert "tokens that contain spaces are not supported" in message
        assert "2 malformed line(s)" in message


def test_a_single_column_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "one.txt", "a O\nb\n")
    with pytest.raises(ConversionError, match=r"one\.txt:2: 1 column"):
        read_column_file(path)


def test_invalid_utf8_and_empty_files_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.bio"
    bad.write_bytes("a O\nb\xe9 O\n".encode("latin-1"))
    with pytest.raises(ConversionError, match=r"latin1\.bio:2: not UTF-8"):
        read_column_file(bad)
    with pytest.raises(ConversionError, match="no tokens"):
        read_column_file(write(tmp_path, "empty.bio", f"\n\t\n{DOCSTART}\n\n"))


def test_a_utf8_bom_is_not_part_of_the_first_token(tmp_path: Path) -> None:
    result = read_column_file(write(tmp_path, "bom.bio", "\ufeffAnna B-PER\n"))
    assert result.docs[0][0].text == "Anna"


# ------------------------------------------------------------------ files and reports
def test_output_keeps_the_whole_file_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    names = ["eng.train", "eng.testa", "eng.testb", "train.char.bmes"]
    inputs = [write(data, name, "a O\n") for name in names]
    results = convert_files(inputs, tmp_path / "out")
    assert [r.output for r in results] == [tmp_path / "out" / f"{n}.spacy" for n in names]
    assert all(r.output is not None and r.output.is_file() for r in results)
    assert output_path("x/eng.testa", "o") == Path("o/eng.testa.spacy")


def test_same_name_from_two_directories_is_refused(tmp_path: Path) -> None:
    a = write(tmp_path / "a", "train.bio", "a O\n")
    b = write(tmp_path / "b", "train.bio", "b O\n")
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="would both be written to") as info:
        convert_files([a, b], out)
    assert str(a) in str(info.value) and str(b) in str(info.value)
    assert not out.exists()
    with pytest.raises(ConversionError, match="would both be written to"):
        convert_files([a, a], out)


def test_overwriting_an_input_is_refused(tmp_path: Path) -> None:
    first = write(tmp_path, "x.iob", "a O\n")
    victim = write(tmp_path, "x.iob.spacy", "b O\n")  # an input that is named like an output
    with pytest.raises(ConversionError, match="is an input file"):
        convert_files([first, victim], tmp_path)
    assert victim.read_text() == "b O\n"
    with pytest.raises(ConversionError, match="--stats-json"):
        convert_files([first], tmp_path / "out", stats_json=first)
    assert first.read_text() == "a O\n"


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    path = write(tmp_path, "keep.bio", "a I-X\nb O\n")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    convert_files([path], tmp_path)  # output beside the input
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert (tmp_path / "keep.bio.spacy").is_file()


def test_a_bad_file_means_nothing_is_written(tmp_path: Path) -> None:
    good = write(tmp_path, "good.bio", "a O\n")
    bad = write(tmp_path, "bad.bio", "a O\nb O O\n")
    other = write(tmp_path, "bad2.bioes", "a O\nb E-X\n")
    with pytest.raises(ConversionError) as info:
        convert_files([good, bad, other], tmp_path / "out", strict=True)
    assert f"{bad}:2: 3 columns" in str(info.value)
    assert f"{other}:2: 'E-X' after 'O'" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_docbin_round_trip_keeps_sentences_entities_and_spaces(tmp_path: Path) -> None:
    path = docstart_file(tmp_path)
    (result,) = convert_files([path], tmp_path / "out", lang="en")
    assert result.output is not None
    docs = list(DocBin().from_disk(result.output).get_docs(blank_vocab("en")))
    assert [d.text for d in docs] == [d.text for d in result.docs]
    assert [sent_lengths(d) for d in docs] == [[2, 1, 3], [1, 2]]
    assert [ents(d) for d in docs] == [[(0, 1, "PER"), (4, 6, "LOC")], [(0, 1, "ORG")]]
    assert not docs[0].user_data


def test_counts_report_and_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = docstart_file(tmp_path)
    dev = write(tmp_path, "dev.bio", "x B-PER\ny I-PER\n\nz I-ORG\n\n")
    stats_json = tmp_path / "stats" / "counts.json"
    results = convert_files([train, dev], tmp_path / "out", stats_json=stats_json)
    data = json.loads(stats_json.read_text())
    assert [f["output"] for f in data["files"]] == [str(r.output) for r in results]
    first, second = data["files"]
    assert (first["docs"], first["sentences"], first["tokens"]) == (2, 5, 9)
    assert first["entities"] == {"LOC": 1, "ORG": 1, "PER": 1}
    assert (first["entities_total"], first["scheme"], first["repaired_positions"]) == (3, "BIO", 0)
    assert (second["docs"], second["sentences"], second["tokens"]) == (1, 2, 3)
    assert second["entities"] == {"ORG": 1, "PER": 1}
    assert second["repairs"] == [f"{dev}:4: " + results[1].repairs[0].message]
    print_report(results)
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # wasabi wraps long messages
    assert "docs.iob.spacy" in out and "dev.bio.spacy" in out
    assert "2 docs, 5 sentences, 9 tokens, 3 entities" in flat
    assert f"{dev}:4: 'I-ORG' at the start" in out
    assert "repaired 1 invalid BIO sequence(s) at 1 position(s)" in flat
    table_rows = [line.split() for line in out.splitlines()]
    assert ["LOC", "1", "0"] in table_rows and ["total", "3", "2"] in table_rows


def test_report_suggests_strip_digit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = convert_files([write(tmp_path, "w.bio", "科0\tO\n技1\tO\n")], tmp_path, lang="zh")
    print_report(results)
    assert "convert again with --strip-digit" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------ sample corpora
def test_sample_corpora_convert_with_the_readme_counts(tmp_path: Path) -> None:
    en = convert_files(
        [ROOT / "assets/en_sample/train.iob", ROOT / "assets/en_sample/dev.iob"], tmp_path / "en"
    )
    assert [(r.stats.docs, r.stats.sentences, r.stats.tokens) for r in en] == [
        (24, 242, 3719),
        (6, 60, 855),
    ]
    assert en[0].stats.entities == {"PER": 98, "ORG": 88, "LOC": 132, "MISC": 76}
    assert en[1].stats.entities == {"PER": 25, "ORG": 24, "LOC": 32, "MISC": 21}
    assert [r.repairs for r in en] == [[], []]
    zh = convert_files(
        [ROOT / "assets/zh_sample/train.bio", ROOT / "assets/zh_sample/dev.bio"],
        tmp_path / "zh",
        lang="zh",
        strip_digit=True,
    )
    assert [(r.stats.sentences, r.stats.tokens) for r in zh] == [(200, 8741), (60, 2512)]
    # assets/README.md: 244 strict, 245 lenient (the repaired I-PER.NOM at line 1266).
    assert [r.stats.n_entities for r in zh] == [245, 118]
    assert zh[0].stats.entities["PER.NOM"] == 124
    assert [p.line for p in zh[0].repairs] == [1266]
    assert all(t.whitespace_ == "" for d in zh[0].docs for t in d)


# ------------------------------------------------------------------------------ CLI
def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spacy_crf_ner", "convert", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_converts_and_writes_stats(tmp_path: Path) -> None:
    path = write(tmp_path, "w.train", "科0\tB-LOC\n技1\tI-LOC\n\n大0\tI-LOC\n\n")
    proc = run_cli(
        path, "-o", "out", "--lang", "zh", "--strip-digit", "--stats-json", "s.json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 docs, 2 sentences, 3 tokens, 2 entities" in " ".join(proc.stdout.split())
    assert f"{path}:4: 'I-LOC' at the start" in proc.stdout
    docs = list(DocBin().from_disk(tmp_path / "out" / "w.train.spacy").get_docs(blank_vocab("zh")))
    assert docs[0].text == "科技大"
    stats = json.loads((tmp_path / "s.json").read_text())["files"][0]
    assert (stats["tokens"], stats["entities"], stats["repaired_positions"]) == (3, {"LOC": 2}, 1)
    assert proc.stderr == ""  # no progress bar for small inputs


@pytest.mark.slow
def test_cli_strict_fails_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.bio", "a O\nb I-PER\n")
    proc = run_cli(path, "-o", "out", "--strict", "--scheme", "IOB2", cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{path}:2: 'I-PER' after 'O'" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------- annotation is never lost or invented
def test_missing_tags_leave_the_annotation_unset(tmp_path: Path) -> None:
    # Old defect: "-" became O, with only a "repaired" warning.
    text = "Anna B-PER\nLopez I-PER\nsaw -\nthe -\nsea O\n\nBob B-PER\n"
    result = read_column_file(write(tmp_path, "partial.bio", text), n_sents=0, strict=True)
    doc = result.docs[0]
    assert [t.ent_iob_ for t in doc] == ["B", "I", "", "", "O", "B"]
    assert ents(doc) == [(0, 2, "PER"), (5, 6, "PER")]
    assert result.repairs == [] and result.stats.missing_tokens == 2
    assert doc.has_annotation("ENT_IOB")
    # The DocBin keeps the missing annotation.
    (converted,) = convert_files([tmp_path / "partial.bio"], tmp_path / "out", n_sents=0)
    assert converted.output is not None
    (back,) = DocBin().from_disk(converted.output).get_docs(blank_vocab("en"))
    assert [t.ent_iob_ for t in back] == ["B", "I", "", "", "O", "B"]


@pytest.mark.parametrize(
    ("scheme", "text", "line", "words"),
    [
        ("BIO", "a B-PER\nb -\nc I-PER\n", 3, "'I-PER' follows a '-' (missing) token"),
        ("BIOES", "a B-PER\nb -\n", 1, "'B-PER' is followed by a '-' (missing) token"),
        ("BILUO", "a -\nb L-PER\n", 2, "'L-PER' follows a '-'"),
        ("BMES", "a -\nb M-ORG\nc E-ORG\n", 2, "'M-ORG' follows a '-'"),
    ],
)
def test_entities_running_into_missing_tokens_are_refused(
    tmp_path: Path, scheme: str, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, "gap.txt", text)
    for strict in (False, True):
        with pytest.raises(ConversionError) as info:
            read_column_file(path, scheme=scheme, strict=strict)
        assert f"{path}:{line}: {words}" in str(info.value)


def test_an_entity_before_a_missing_token_in_bio_ends_there(tmp_path: Path) -> None:
    # In BIO (and IOB1) an entity ends at the last I- tag; in BIOES it must be closed.
    path = write(tmp_path, "gap.bio", "a B-PER\nb -\nc B-LOC\n")
    result = read_column_file(path, scheme="BIO", strict=True)
    assert ents(result.docs[0]) == [(0, 1, "PER"), (2, 3, "LOC")]


def test_lowercase_tags_are_read_with_upper_case_prefixes(tmp_path: Path) -> None:
    # Old defect: a file of lowercase tags converted to 0 entities.
    text = "anna b-per\nlopez e-per\nin o\nparis s-loc\n\n"
    result = read_column_file(write(tmp_path, "lower.bioes", text), strict=True)
    assert result.scheme == "BIOES"
    assert ents(result.docs[0]) == [(0, 2, "per"), (3, 4, "loc")]  # labels as written
    assert result.stats.normalised_tags == 4 and result.stats.to_dict()["normalised_tags"] == 4


RESERVED = [
    ("B-O", "reserved entity type 'O'"),
    ("I-O", "reserved"),
    ("b-o", "'B-o'"),
    ("B-", "no entity type"),
    ("I--", "reserved"),
]


@pytest.mark.parametrize(("tag", "words"), RESERVED)
def test_empty_or_reserved_types_are_refused_with_file_and_line(
    tmp_path: Path, tag: str, words: str
) -> None:
    # Old defect: B-O created a label "O"; training later failed without naming the file.
    path = write(tmp_path, "o.bio", f"a O\nb {tag}\n")
    with pytest.raises(ConversionError) as info:
        read_column_file(path)  # not only with --strict
    assert f"{path}:2: " in str(info.value) and words in str(info.value)


def test_existing_outputs_are_refused_unless_overwrite(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bio", "a B-X\n")
    (result,) = convert_files([path], tmp_path / "out")
    saved = (tmp_path / "out" / "a.bio.spacy").read_bytes()
    write(tmp_path, "a.bio", "a O\n")
    with pytest.raises(ConversionError, match="exists .*--overwrite"):
        convert_files([path], tmp_path / "out")
    assert (tmp_path / "out" / "a.bio.spacy").read_bytes() == saved
    stats = write(tmp_path, "stats.json", "{}")
    with pytest.raises(ConversionError, match="--stats-json .*stats.json exists"):
        convert_files([path], tmp_path / "out2", stats_json=stats)
    assert not (tmp_path / "out2").exists()
    (again,) = convert_files([path], tmp_path / "out", overwrite=True, stats_json=stats)
    assert again.stats.n_entities == 0
    assert json.loads(stats.read_text())["files"][0]["entities_total"] == 0


def test_every_output_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    first = write(tmp_path, "first.bio", "a O\n")
    second = write(tmp_path, "second.bio", "b O\n")
    out = tmp_path / "out"
    (out / "second.bio.spacy").mkdir(parents=True)  # blocks the second output
    with pytest.raises(ConversionError, match="second.bio.spacy is a directory"):
        convert_files([first, second], out)
    assert sorted(p.name for p in out.iterdir()) == ["second.bio.spacy"]
    with pytest.raises(ConversionError, match="--stats-json .* is a directory"):
        convert_files([first], tmp_path / "o2", stats_json=tmp_path)
    with pytest.raises(ConversionError, match="--output-dir .* is a file"):
        convert_files([first], second)
    assert not (tmp_path / "o2").exists() and second.read_text() == "b O\n"


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    # Old: each output was written and renamed in turn, so a failure (disk full) at the
    # second left the first written. Now every output goes to a temporary file first, and
    # only then are they all renamed; a failure removes the temporary files.
    inputs = [write(tmp_path, f"{n}.bio", "a O\n") for n in ("x", "y")]
    real = Path.write_bytes
    calls = []

    def second_write_fails(self: Path, data: bytes) -> int:
        calls.append(self)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", second_write_fails)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        convert_files(inputs, out)
    assert len(calls) == 2 and list(out.iterdir()) == []  # no output, no temporary file
