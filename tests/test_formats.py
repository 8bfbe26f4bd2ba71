"""Annotation-tool exports (Prodigy, doccano, Label Studio) on hand-written samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import spacy
from spacy.tokens import Doc

from spacy_crf_ner.convert import ConversionError, convert_files, read_annotation_file
from spacy_crf_ner.formats import detect_format, read_annotations, to_doccano, to_prodigy

NLP = spacy.blank("en")
TEXT = "Anna Lopez flew to New York."
#       0    5     11   16 19  23  27


def jsonl(tmp_path: Path, name: str, records: list[Any]) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf8")
    return path


def ents(doc: Doc) -> list[tuple[str, str]]:
    return [(e.text, e.label_) for e in doc.ents]


# ---------------------------------------------------------------------- Prodigy


def test_prodigy_with_and_without_answers(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        "prodigy.jsonl",
        [
            {"text": TEXT, "spans": [{"start": 0, "end": 10, "label": "PER"},
                                      {"start": 19, "end": 27, "label": "LOC"}]},
            {"text": "Bob sings.", "spans": [{"start": 0, "end": 3, "label": "PER"}],
             "answer": "accept", "accept": []},
            {"text": "Rejected Bob.", "spans": [], "answer": "reject"},
            {"text": "Ignored.", "spans": [], "answer": "ignore"},
            {"text": "Nothing here.", "spans": []},
        ],
    )  # fmt: skip
    assert detect_format(path) == "prodigy"
    result = read_annotations(path, "prodigy", NLP.make_doc)
    assert result.problems == []
    assert [ents(d) for d in result.docs] == [
        [("Anna Lopez", "PER"), ("New York", "LOC")],
        [("Bob", "PER")],
        [],
    ]
    assert dict(result.skipped) == {'answer "reject"': 1, 'answer "ignore"': 1}
    assert result.records == 5
    # Tokens outside the spans are annotated O, not missing.
    assert [t.ent_iob_ for t in result.docs[2]] == ["O", "O", "O"]


def test_prodigy_tokens_are_kept(tmp_path: Path) -> None:
    text = "New-York rocks"
    tokens = [
        {"text": "New-York", "start": 0, "end": 8, "id": 0, "ws": True},
        {"text": "rocks", "start": 9, "end": 14, "id": 1, "ws": False},
    ]
    spans = [{"start": 0, "end": 8, "label": "LOC", "token_start": 0, "token_end": 0}]
    path = jsonl(tmp_path, "t.jsonl", [{"text": text, "tokens": tokens, "spans": spans}])
    (doc,) = read_annotations(path, "prodigy", NLP.make_doc).docs
    assert [t.text for t in doc] == ["New-York", "rocks"]  # spaCy would split New-York
    assert ents(doc) == [("New-York", "LOC")]


def test_prodigy_bad_records_are_reported_never_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        # misaligned: "nna Lopez"
        json.dumps({"text": TEXT, "spans": [{"start": 1, "end": 10, "label": "PER"}]}),
        "{not json",
        json.dumps({"spans": []}),  # no text
        json.dumps({"text": TEXT, "spans": [{"start": 0, "end": 4, "label": "O"}]}),
        json.dumps({"text": TEXT, "spans": [{"start": 0, "end": 10, "label": "PER"},
                                            {"start": 5, "end": 10, "label": "PER"}]}),
        json.dumps({"text": TEXT, "spans": [{"start": 19, "end": 99, "label": "LOC"}]}),
        json.dumps({"text": TEXT, "spans": [{"start": 18, "end": 27, "label": "LOC"}]}),
        json.dumps({"text": TEXT, "spans": [], "answer": "maybe"}),
        json.dumps({"text": "Fine.", "spans": []}),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    result = read_annotations(path, "prodigy", NLP.make_doc)
    assert [n for n, _ in result.problems] == [1, 2, 3, 4, 5, 6, 7, 8]
    messages = dict(result.problems)
    assert "span 1-10 'PER' 'nna Lopez'" in messages[1] and "token boundaries" in messages[1]
    assert repr(TEXT) in messages[1]  # the record's text
    assert "invalid JSON" in messages[2]
    assert '"text"' in messages[3]
    assert "reserved" in messages[4]
    assert "overlap" in messages[5]
    assert "not within the text" in messages[6]
    assert "whitespace" in messages[7]
    assert "maybe" in messages[8]
    assert len(result.docs) == 1
    with pytest.raises(ConversionError) as info:
        read_annotation_file(path, "prodigy")
    assert f"{path}:1: " in str(info.value) and "8 problem(s)" in str(info.value)
    out = tmp_path / "out"
    with pytest.raises(ConversionError):
        convert_files([path], out)
    assert not out.exists()


# ---------------------------------------------------------------------- doccano


def test_doccano_label_and_entities_formats(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        "doccano.jsonl",
        [
            {"id": 1, "text": TEXT, "label": [[0, 10, "PER"], [19, 27, "LOC"]]},
            {"id": 2, "text": "Bob sings.", "label": []},
            {"text": "Bob sings.", "label": [[0, 3, "PER"]], "answer": "reject"},
        ],
    )
    assert detect_format(path) == "doccano"
    result = read_annotations(path, "doccano", NLP.make_doc)
    assert result.problems == [] and result.skipped == {'answer "reject"': 1}
    assert [ents(d) for d in result.docs] == [[("Anna Lopez", "PER"), ("New York", "LOC")], []]
    newer = jsonl(
        tmp_path,
        "entities.jsonl",
        [{"text": TEXT, "entities": [{"id": 7, "start_offset": 19, "end_offset": 27,
                                      "label": "LOC"}], "relations": []}],
    )  # fmt: skip
    assert detect_format(newer) == "doccano"
    (doc,) = read_annotations(newer, "doccano", NLP.make_doc).docs
    assert ents(doc) == [("New York", "LOC")]


def test_doccano_bad_records(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        "bad.jsonl",
        [
            {"text": TEXT, "label": [[0, 3, "PER"]]},  # "Ann" of "Anna"
            {"text": TEXT, "label": [[0, 10]]},
            {"text": TEXT, "label": [[0, 10, ""]]},
            {"text": TEXT, "label": [[0, 10, "PER"], [19, 27, "LOC"]]},
        ],
    )
    result = read_annotations(path, "doccano", NLP.make_doc)
    assert [n for n, _ in result.problems] == [1, 2, 3]
    assert "span 0-3 'PER' 'Ann'" in result.problems[0][1]
    assert len(result.docs) == 1


# ------------------------------------------------------------------ Label Studio


def ls_task(text: str, results: list[tuple[int, int, str]], **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", 1),
        "data": {"text": text},
        "annotations": [
            {
                "was_cancelled": extra.pop("cancelled", False),
                "result": [
                    {"type": "labels", "from_name": "label", "to_name": "text",
                     "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]}}
                    for s, e, label in results
                ],
            }
        ],
        **extra,
    }  # fmt: skip


def test_label_studio_export(tmp_path: Path) -> None:
    tasks = [
        ls_task(TEXT, [(0, 10, "PER"), (19, 27, "LOC")], id=11,
                predictions=[{"result": [{"value": {"start": 0, "end": 4, "labels": ["X"]}}]}]),
        ls_task("Bob sings.", [(0, 3, "PER")], id=12, cancelled=True),
        {"id": 13, "data": {"text": "Not yet."}, "annotations": []},
        {**ls_task("Bob sings.", [(0, 3, "PER")], id=14)},
    ]  # fmt: skip
    tasks[3]["annotations"].append(ls_task("Bob sings.", [], id=14)["annotations"][0])
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf8")
    assert detect_format(path) == "labelstudio"
    result = read_annotations(path, "labelstudio", NLP.make_doc)
    assert result.problems == []
    assert [ents(d) for d in result.docs] == [
        [("Anna Lopez", "PER"), ("New York", "LOC")],  # predictions ignored
        [("Bob", "PER")],  # the first of two annotations
    ]
    assert result.skipped == {
        "not annotated or cancelled": 2,
        "further annotations of a task (the first is used)": 1,
    }


def test_label_studio_bad_tasks(tmp_path: Path) -> None:
    two_labels = ls_task(TEXT, [(0, 10, "PER")], id=3)
    two_labels["annotations"][0]["result"][0]["value"]["labels"] = ["PER", "ORG"]
    tasks = [
        ls_task(TEXT, [(0, 12, "PER")], id=1),  # "Anna Lopez f"
        {"id": 2, "data": {"a": 1}, "annotations": []},
        two_labels,
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(tasks), encoding="utf8")
    result = read_annotations(path, "labelstudio", NLP.make_doc)
    assert [n for n, _ in result.problems] == [1, 2, 3]
    assert "task 1 (id 1)" in result.problems[0][1] and "'Anna Lopez f'" in result.problems[0][1]
    assert 'no text in "data"' in result.problems[1][1]
    assert "exactly one label" in result.problems[2][1]
    not_a_list = tmp_path / "obj.json"
    not_a_list.write_text("{}")
    assert detect_format(not_a_list) is None
    assert (
        "list of tasks" in read_annotations(not_a_list, "labelstudio", NLP.make_doc).problems[0][1]
    )


# ------------------------------------------------------------ writers, convert


def test_writers_round_trip_through_the_readers(tmp_path: Path) -> None:
    doc = NLP.make_doc(TEXT)
    record = {
        "index": 0, "text": TEXT, "uncertainty": 0.25, "path_prob": 0.75,
        "entities": [{"start": 0, "end": 10, "label": "PER", "text": "Anna Lopez", "prob": 0.9},
                     {"start": 19, "end": 27, "label": "LOC", "text": "New York", "prob": 0.8}],
    }  # fmt: skip
    prodigy, doccano = to_prodigy(record, doc), to_doccano(record)
    assert prodigy["spans"][1] == {
        "start": 19, "end": 27, "label": "LOC", "token_start": 4, "token_end": 5,
    }  # fmt: skip
    assert prodigy["meta"]["entity_probs"][0]["prob"] == 0.9
    assert doccano["label"] == [[0, 10, "PER"], [19, 27, "LOC"]]
    for name, task in (("p.jsonl", prodigy), ("d.jsonl", doccano)):
        path = jsonl(tmp_path, name, [task])
        fmt = detect_format(path)
        assert fmt is not None
        (back,) = read_annotations(path, fmt, NLP.make_doc).docs
        assert ents(back) == [("Anna Lopez", "PER"), ("New York", "LOC")]


def test_convert_files_detects_each_format(tmp_path: Path) -> None:
    prodigy = jsonl(
        tmp_path, "p.jsonl", [{"text": TEXT, "spans": [{"start": 0, "end": 4, "label": "PER"}]}]
    )
    doccano = jsonl(tmp_path, "d.jsonl", [{"text": TEXT, "label": [[19, 27, "LOC"]]}])
    studio = tmp_path / "s.json"
    studio.write_text(json.dumps([ls_task(TEXT, [(11, 15, "ACT")])]))
    column = tmp_path / "c.iob"
    column.write_text("Anna B-PER\n")
    results = convert_files([prodigy, doccano, studio, column], tmp_path / "out")
    assert [r.format for r in results] == ["prodigy", "doccano", "labelstudio", "column"]
    assert [dict(r.stats.entities) for r in results] == [
        {"PER": 1},
        {"LOC": 1},
        {"ACT": 1},
        {"PER": 1},
    ]
    with pytest.raises(ConversionError, match="--format"):
        convert_files([column], tmp_path / "out2", fmt="csv")
    # An explicit format overrides the detection; a record of another tool is refused,
    # not read as a record without entities.
    with pytest.raises(ConversionError, match='d.jsonl:1: .*no "spans" field'):
        convert_files([doccano], tmp_path / "out3", fmt="prodigy")
    with pytest.raises(ConversionError, match='p.jsonl:1: .*no "label" or "entities"'):
        convert_files([prodigy], tmp_path / "out3", fmt="doccano")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_unrecognised_json_is_refused_not_read_as_columns(tmp_path: Path) -> None:
    path = jsonl(tmp_path, "texts.jsonl", [{"text": TEXT}])
    assert detect_format(path) is None
    with pytest.raises(ConversionError, match="cannot tell its format.*--format"):
        convert_files([path], tmp_path / "out")
    assert not (tmp_path / "out").exists()
