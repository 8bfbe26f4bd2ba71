"""Tests for spacy_crf_ner.evaluate: scores, confusion matrix, outputs, CLI and rendering.

(The other commands and every CLI error path are in test_cli.py.)

A deterministic ``entity_ruler`` pipeline stands in for a trained crf_ner (anything that
assigns doc.ents can be evaluated). Against the gold set below it gets entities right,
with the wrong label, with the wrong boundaries, misses some and invents one, so every
cell of the expected scores was counted by hand:

    gold                        predicted
    Alice PER, Paris LOC        Alice PER, Paris LOC        both right
    Bob PER, Acme Corp ORG      Bob ORG, Acme Corp ORG      wrong label, right
    Carol PER, Berlin LOC       Berlin LOC                  missed, right
    New York LOC                Monday DATE, York LOC       spurious, wrong boundaries
    Dave PER, Erin PER          Dave PER                    right, missed

    PER: tp 2 fp 0 fn 3 -> P 1, R 2/5, F 4/7   LOC: tp 2 fp 1 fn 1 -> P R F 2/3
    ORG: tp 1 fp 1 fn 0 -> P 1/2, R 1, F 2/3   DATE: tp 0 fp 1 fn 0 -> 0 0 0
    micro: tp 5, 8 predicted, 9 gold -> P 5/8, R 5/9, F 10/17
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_crf_ner.cli import app
from spacy_crf_ner.evaluate import (
    CONFUSION_PLOT_FILE,
    F1_PLOT_FILE,
    MISSED,
    SCORES_FILE,
    SPURIOUS,
    NoEntityRecognizerError,
    entity_confusion,
    evaluate_pipeline,
    format_table,
    render_entities,
    run_evaluation,
    seqeval_scores,
)
from spacy_crf_ner.loaders import load_docbin, load_pipeline, read_texts

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

PATTERNS = [
    {"label": "PER", "pattern": "Alice"},
    {"label": "PER", "pattern": "Dave"},
    {"label": "ORG", "pattern": "Bob"},
    {"label": "ORG", "pattern": [{"ORTH": "Acme"}, {"ORTH": "Corp"}]},
    {"label": "LOC", "pattern": "Paris"},
    {"label": "LOC", "pattern": "Berlin"},
    {"label": "LOC", "pattern": "York"},
    {"label": "DATE", "pattern": "Monday"},
]

GOLD = [
    ("Alice visited Paris .", ["B-PER", "O", "B-LOC", "O"]),
    ("Bob works at Acme Corp .", ["B-PER", "O", "O", "B-ORG", "I-ORG", "O"]),
    ("Carol lives in Berlin .", ["B-PER", "O", "O", "B-LOC", "O"]),
    ("Monday she flew to New York .", ["O", "O", "O", "O", "B-LOC", "I-LOC", "O"]),
    ("Dave and Erin met .", ["B-PER", "O", "B-PER", "O", "O"]),
]
N_TOKENS = sum(len(text.split()) for text, _ in GOLD)

# label: (precision, recall, f1, support)
EXPECTED = {
    "DATE": (0.0, 0.0, 0.0, 0),
    "LOC": (2 / 3, 2 / 3, 2 / 3, 3),
    "ORG": (1 / 2, 1.0, 2 / 3, 1),
    "PER": (1.0, 2 / 5, 4 / 7, 5),
}
EXPECTED_MICRO = (5 / 8, 5 / 9, 10 / 17, 9)
EXPECTED_MACRO = tuple(sum(v[i] for v in EXPECTED.values()) / 4 for i in range(3)) + (9,)

# gold row -> {predicted column: count}; every other cell is 0.
EXPECTED_CONFUSION = {
    "PER": {"PER": 2, "ORG": 1, MISSED: 2},
    "LOC": {"LOC": 2, MISSED: 1},
    "ORG": {"ORG": 1},
    SPURIOUS: {"DATE": 1, "LOC": 1},
}


def make_nlp() -> Language:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(PATTERNS)
    return nlp


def gold_doc(nlp: Language, text: str, ents: list[str | None] | None) -> Doc:
    return Doc(nlp.vocab, words=text.split(), ents=ents)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ruler pipeline saved to disk and the gold set as a .spacy file."""
    root = tmp_path_factory.mktemp("corpus")
    nlp = make_nlp()
    nlp.to_disk(root / "model")
    DocBin(docs=[gold_doc(nlp, t, e) for t, e in GOLD]).to_disk(root / "gold.spacy")
    return {"root": root, "model": root / "model", "data": root / "gold.spacy"}


@pytest.fixture(scope="module")
def results(corpus: dict[str, Path]) -> dict[str, Any]:
    return evaluate_pipeline(make_nlp(), corpus["data"], batch_size=2)


def prfs(row: dict[str, Any]) -> tuple[float, float, float, int]:
    return row["precision"], row["recall"], row["f1"], row["support"]


# ------------------------------------------------------------------------- scores


@pytest.mark.parametrize("scorer", ["spacy", "seqeval"])
def test_per_type_scores_match_hand_count(results: dict[str, Any], scorer: str) -> None:
    per_type = results[scorer]["per_type"]
    assert sorted(per_type) == sorted(EXPECTED)
    for label, expected in EXPECTED.items():
        assert prfs(per_type[label]) == pytest.approx(expected), label


@pytest.mark.parametrize("scorer", ["spacy", "seqeval"])
def test_micro_and_macro_match_hand_count(results: dict[str, Any], scorer: str) -> None:
    assert prfs(results[scorer]["micro"]) == pytest.approx(EXPECTED_MICRO)
    assert prfs(results[scorer]["macro"]) == pytest.approx(EXPECTED_MACRO)


def test_spacy_scores_are_nlp_evaluate_scores(
    results: dict[str, Any], corpus: dict[str, Path]
) -> None:
    nlp = make_nlp()
    gold = load_docbin(corpus["data"], nlp.vocab)
    direct = nlp.evaluate([Example(Doc(nlp.vocab, words=[t.text for t in d]), d) for d in gold])
    ours = results["spacy"]["scores"]
    for key in ("ents_p", "ents_r", "ents_f"):
        assert ours[key] == pytest.approx(direct[key])
    assert ours["ents_per_type"] == direct["ents_per_type"]


def test_seqeval_report_is_the_raw_report(results: dict[str, Any]) -> None:
    report = results["seqeval"]["report"]
    assert {"micro avg", "macro avg", "weighted avg"} <= set(report)
    assert report["PER"]["f1-score"] == pytest.approx(4 / 7)
    assert report["micro avg"]["support"] == 9


def test_counts_and_speed(results: dict[str, Any], corpus: dict[str, Path]) -> None:
    assert results["n_docs"] == len(GOLD)
    assert results["n_tokens"] == N_TOKENS
    assert results["n_entities"] == {"gold": 9, "predicted": 8, "predicted_ignored": 0}
    assert results["data"] == str(corpus["data"])
    assert results["words_per_second"] > 0
    assert results["spacy"]["scores"]["speed"] == results["words_per_second"]


def test_confusion_matrix(results: dict[str, Any]) -> None:
    confusion = results["confusion"]
    assert confusion["rows"] == ["DATE", "LOC", "ORG", "PER", SPURIOUS]
    assert confusion["columns"] == ["DATE", "LOC", "ORG", "PER", MISSED]
    for i, row in enumerate(confusion["rows"]):
        for j, column in enumerate(confusion["columns"]):
            expected = EXPECTED_CONFUSION.get(row, {}).get(column, 0)
            assert confusion["matrix"][i][j] == expected, (row, column)


def test_chunked_evaluation_gives_the_same_scores(
    results: dict[str, Any], corpus: dict[str, Path]
) -> None:
    chunked = evaluate_pipeline(make_nlp(), corpus["data"], batch_size=1, chunk_size=2)
    for part in ("spacy", "seqeval"):
        assert chunked[part]["per_type"] == results[part]["per_type"]
        assert chunked[part]["micro"] == results[part]["micro"]
    assert chunked["confusion"] == results["confusion"]
    assert chunked["n_docs"] == results["n_docs"]


def test_missing_annotation_is_ignored_by_both_scorers() -> None:
    """A prediction on a gold token with unknown annotation is neither right nor wrong for
    spaCy; seqeval and the confusion matrix must ignore it too, or micro scores differ."""
    nlp = make_nlp()
    gold = [
        # "Monday" has missing annotation: the DATE prediction is ignored.
        gold_doc(nlp, "Monday she flew to Paris .", [None, "O", "O", "O", "B-LOC", "O"]),
        # No NER annotation at all: spaCy skips the doc, so must we.
        gold_doc(nlp, "Alice met Bob .", None),
        gold_doc(nlp, "Dave and Erin met .", ["B-PER", "O", "B-PER", "O", "O"]),
    ]
    out = evaluate_pipeline(nlp, examples_for(nlp, gold))
    assert out["n_docs_without_ner_annotation"] == 1
    assert out["n_entities"] == {"gold": 3, "predicted": 2, "predicted_ignored": 1}
    assert prfs(out["spacy"]["micro"]) == pytest.approx((1.0, 2 / 3, 0.8, 3))
    assert prfs(out["seqeval"]["micro"]) == pytest.approx(prfs(out["spacy"]["micro"]))
    assert "DATE" not in out["seqeval"]["per_type"]
    confusion = out["confusion"]
    assert confusion["columns"] == ["LOC", "PER", MISSED]  # no DATE anywhere
    assert confusion["matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


def examples_for(nlp: Language, gold: list[Doc]) -> list[Example]:
    return [Example(Doc(nlp.vocab, words=[t.text for t in d]), d) for d in gold]


VOCAB = Vocab()  # shared: building a pipeline per hypothesis example is slow
LABELS = ["PER", "LOC", "B-ORG"]  # a label that looks like a tag must not confuse seqeval


@st.composite
def entity_tags(draw: st.DrawFn, length: int, missing: bool) -> list[str | None]:
    """Valid IOB2 tags for random non-overlapping entities, some tokens maybe missing."""
    tags: list[str | None] = []
    while len(tags) < length:
        if draw(st.booleans()):
            tags.append(None if missing and draw(st.booleans()) else "O")
            continue
        label = draw(st.sampled_from(LABELS))
        size = draw(st.integers(1, min(3, length - len(tags))))
        tags += [f"B-{label}"] + [f"I-{label}"] * (size - 1)
    return tags


@st.composite
def predicted_examples(draw: st.DrawFn) -> list[Example]:
    vocab = VOCAB
    examples = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 8))
        words = [f"w{i}" for i in range(n)]
        gold = Doc(vocab, words=words, ents=draw(entity_tags(n, missing=True)))
        pred = Doc(vocab, words=words, ents=draw(entity_tags(n, missing=False)))
        examples.append(Example(pred, gold))
    return examples


@settings(max_examples=60, deadline=None)
@given(predicted_examples())
def test_seqeval_micro_equals_spacy_micro_on_random_predictions(examples: list[Example]) -> None:
    spacy_prf = get_ner_prf(examples)
    report = seqeval_scores(examples)
    micro = report["micro avg"]
    if spacy_prf["ents_p"] is None:  # no entity anywhere
        assert micro["support"] == 0 and micro["f1-score"] == 0
        return
    assert micro["precision"] == pytest.approx(spacy_prf["ents_p"], abs=1e-9)
    assert micro["recall"] == pytest.approx(spacy_prf["ents_r"], abs=1e-9)
    assert micro["f1-score"] == pytest.approx(spacy_prf["ents_f"], abs=1e-9)
    # The confusion diagonal is spaCy's true positives; the rest of each column its errors.
    confusion = entity_confusion(examples)
    tp = sum(confusion["matrix"][i][i] for i in range(len(confusion["rows"]) - 1))
    n_pred = sum(sum(row[:-1]) for row in confusion["matrix"])
    n_gold = sum(sum(row) for row in confusion["matrix"][:-1])
    assert tp == _spacy_tp(examples)
    if n_pred:
        assert tp / n_pred == pytest.approx(spacy_prf["ents_p"], abs=1e-9)
    if n_gold:
        assert tp / n_gold == pytest.approx(spacy_prf["ents_r"], abs=1e-9)


def _spacy_tp(examples: list[Example]) -> int:
    """True positives as spaCy counts them (exact label and boundaries, annotated tokens)."""
    tp = 0
    for eg in examples:
        if not eg.reference.has_annotation("ENT_IOB"):
            continue
        gold = {(e.start, e.end, e.label_) for e in eg.reference.ents}
        tp += sum((e.start, e.end, e.label_) in gold for e in eg.predicted.ents)
    return tp


# ------------------------------------------------------------------------- outputs


def test_table_shows_both_scorers_side_by_side(results: dict[str, Any]) -> None:
    text = format_table(results)
    assert "spaCy P" in text and "seqeval F" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["PER"][1:] == ["100.00", "40.00", "57.14", "100.00", "40.00", "57.14", "5"]
    micro = next(line.split() for line in text.splitlines() if line.startswith("micro avg"))
    assert micro[2:] == ["62.50", "55.56", "58.82", "62.50", "55.56", "58.82", "9"]
    assert any(line.startswith("macro avg") for line in text.splitlines())


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, path  # a real plot, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 300 and height >= 300, (path, width, height)


def test_run_evaluation_writes_scores_and_plots(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval"
    returned = run_evaluation(corpus["model"], corpus["data"], out, progress=False)
    scores = json.loads((out / SCORES_FILE).read_text(encoding="utf8"))
    assert scores == json.loads(json.dumps(returned))
    assert scores["pipeline"] == str(corpus["model"])
    assert scores["data"] == str(corpus["data"])
    assert (scores["n_docs"], scores["n_tokens"]) == (len(GOLD), N_TOKENS)
    assert scores["n_entities"]["gold"] == 9
    assert scores["words_per_second"] > 0
    assert scores["spacy"]["scores"]["ents_f"] == pytest.approx(10 / 17)
    assert scores["seqeval"]["report"]["micro avg"]["f1-score"] == pytest.approx(10 / 17)
    assert scores["confusion"]["matrix"][-1][0] == 1  # (none) -> DATE
    assert_png(out / F1_PLOT_FILE)
    assert_png(out / CONFUSION_PLOT_FILE)


# ------------------------------------------------------------------------- errors


def test_missing_paths_are_named(corpus: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_pipeline(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        run_evaluation(missing, corpus["data"], progress=False)
    data = tmp_path / "absent.spacy"
    with pytest.raises(FileNotFoundError, match=re.escape(str(data))):
        run_evaluation(corpus["model"], data, progress=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(data))):
        evaluate_pipeline(make_nlp(), data)


def test_unreadable_data_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.spacy"
    bad.write_text("not a docbin", encoding="utf8")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        evaluate_pipeline(make_nlp(), bad)


def test_pipeline_without_ner_is_rejected(corpus: dict[str, Path]) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    with pytest.raises(NoEntityRecognizerError, match="doc.ents"):
        evaluate_pipeline(nlp, corpus["data"])
    with pytest.raises(NoEntityRecognizerError, match="sentencizer"):
        render_entities(nlp, ["Alice visited Paris ."])


# ------------------------------------------------------------------------- CLI


def test_cli_evaluate_in_process(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["evaluate", str(corpus["model"]), str(corpus["data"]), "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "micro avg" in result.output and "58.82" in result.output
    assert (out / SCORES_FILE).is_file()


@pytest.mark.parametrize("which", ["model", "data"])
def test_cli_errors_name_the_missing_path(
    corpus: dict[str, Path], tmp_path: Path, which: str
) -> None:
    missing = tmp_path / f"missing-{which}"
    paths = {"model": str(corpus["model"]), "data": str(corpus["data"]), which: str(missing)}
    result = CliRunner().invoke(app, ["evaluate", paths["model"], paths["data"]])
    assert result.exit_code == 1
    assert str(missing) in result.output
    assert "Traceback" not in result.output


def test_cli_rejects_pipeline_without_ner(corpus: dict[str, Path], tmp_path: Path) -> None:
    spacy.blank("en").to_disk(tmp_path / "blank")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "blank"), str(corpus["data"])])
    assert result.exit_code == 1
    assert "doc.ents" in result.output


@pytest.mark.slow
def test_cli_evaluate_subprocess(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sub"
    cmd = [sys.executable, "-m", "spacy_crf_ner", "evaluate", str(corpus["model"])]
    cmd += [str(corpus["data"]), "--output", str(out), "--batch-size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "seqeval F" in proc.stdout and "58.82" in proc.stdout
    assert json.loads((out / SCORES_FILE).read_text())["n_docs"] == len(GOLD)
    assert_png(out / CONFUSION_PLOT_FILE)


# ------------------------------------------------------------------------- render


@pytest.fixture()
def crf_prob() -> Iterator[None]:
    """The Span._.crf_prob extension as crf_ner would register it, removed afterwards."""
    added = not Span.has_extension("crf_prob")
    if added:
        Span.set_extension("crf_prob", default=None)
    yield
    if added:
        Span.remove_extension("crf_prob")


@Language.component("test_evaluate_fake_prob")
def fake_prob(doc: Doc) -> Doc:
    """Gives every entity except LOC a probability; LOC keeps None (no confidence)."""
    for ent in doc.ents:
        ent._.crf_prob = None if ent.label_ == "LOC" else 0.5 + len(ent.text) / 100
    return doc


def test_render_txt_shows_entities(corpus: dict[str, Path], tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("Alice visited Paris .\n\nBob works at Acme Corp .\n", encoding="utf8")
    html_path = tmp_path / "out" / "ents.html"
    result = CliRunner().invoke(
        app, ["render", str(corpus["model"]), str(texts), "--output", str(html_path)]
    )
    assert result.exit_code == 0, result.output
    html = html_path.read_text(encoding="utf8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    for text in ("Alice", "Paris", "Acme Corp"):
        assert re.search(rf"<mark[^>]*>\s*{text}", html), text
    assert re.search(r"Acme Corp\s*<span[^>]*>ORG</span>", html)


def test_render_jsonl_with_limit(corpus: dict[str, Path], tmp_path: Path) -> None:
    jsonl = tmp_path / "texts.jsonl"
    lines = [{"text": "Alice visited Paris ."}, {"text": "Dave and Erin met .", "id": 2}]
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf8")
    html_path = tmp_path / "ents.html"
    args = ["render", str(corpus["model"]), str(jsonl), "-o", str(html_path), "--limit", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    html = html_path.read_text(encoding="utf8")
    assert "Alice" in html and "Dave" not in html


def test_render_spacy_input_repredicts(corpus: dict[str, Path]) -> None:
    nlp = make_nlp()
    docs = read_texts(corpus["data"], nlp.vocab)
    assert len(docs) == len(GOLD)
    html = render_entities(nlp, docs)
    # Carol is a gold entity the ruler misses: only predictions are rendered.
    assert re.search(r"<mark[^>]*>\s*Alice", html)
    assert not re.search(r"<mark[^>]*>\s*Carol", html)
    assert re.search(r"Bob\s*<span[^>]*>ORG</span>", html)  # the predicted (wrong) label


def test_render_shows_probability_in_label(crf_prob: None) -> None:
    nlp = make_nlp()
    html_plain = render_entities(nlp, ["Alice visited Paris ."])
    nlp.add_pipe("test_evaluate_fake_prob")
    html = render_entities(nlp, ["Alice visited Paris .", "Bob works at Acme Corp ."])
    assert re.search(r"Alice\s*<span[^>]*>PER 0.55</span>", html)
    assert re.search(r"Acme Corp\s*<span[^>]*>ORG 0.59</span>", html)
    assert re.search(r"Paris\s*<span[^>]*>LOC</span>", html)  # None: the plain label
    assert "0.55" not in html_plain
    # A label with a probability keeps the colour of its plain label.
    org_color = re.search(r"background: (#[0-9a-fA-F]+)[^>]*>\s*Bob", html)
    assert org_color and org_color.group(1).lower() == "#7aecec"


def test_render_input_errors(corpus: dict[str, Path], tmp_path: Path) -> None:
    vocab = make_nlp().vocab
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "no.txt"))):
        read_texts(tmp_path / "no.txt", vocab)
    odd = tmp_path / "texts.csv"
    odd.write_text("a,b\n", encoding="utf8")
    with pytest.raises(ValueError, match="Unsupported input"):
        read_texts(odd, vocab)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf8")
    with pytest.raises(ValueError, match="line 2"):
        read_texts(bad, vocab)
    result = CliRunner().invoke(
        app, ["render", str(corpus["model"]), str(tmp_path / "no.txt"), "-o", "x.html"]
    )
    assert result.exit_code == 1 and str(tmp_path / "no.txt") in result.output


def test_data_directory_reads_every_docbin(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A directory (what spaCy's corpus reader accepts) gives the docs of all its files."""
    import shutil

    one = evaluate_pipeline(make_nlp(), corpus["data"], batch_size=2)
    folder = tmp_path / "dev"
    (folder / "part").mkdir(parents=True)
    shutil.copy(corpus["data"], folder / "a.spacy")
    shutil.copy(corpus["data"], folder / "part" / "b.spacy")
    both = evaluate_pipeline(make_nlp(), folder, batch_size=2)
    assert both["seqeval"]["micro"]["support"] == 2 * one["seqeval"]["micro"]["support"]
    assert both["spacy"]["micro"]["f1"] == pytest.approx(one["spacy"]["micro"]["f1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .spacy files"):
        evaluate_pipeline(make_nlp(), tmp_path / "empty", batch_size=2)
