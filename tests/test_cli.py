"""The command line: every command, its errors, and the annotation round trip.

One small crf_ner is trained once for the module; most commands run in-process through
typer's CliRunner. Only the checks that must see a fresh interpreter (the command list, each
command's --help, the console script) start subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from typer.testing import CliRunner

from spacy_crf_ner.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "annotate",
    "calibrate",
    "convert",
    "evaluate",
    "export",
    "predict",
    "rank",
    "render",
    "train",
]
MODEL_COMMANDS = ["annotate", "calibrate", "evaluate", "predict", "rank", "render"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def invoke(*args: Any) -> Any:
    """Run a command in-process; stdout and stderr together in ``.output``."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result: Any, *names: Any) -> None:
    """Exit 1, one ✘ line naming each thing, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    fail_lines = [line for line in result.output.splitlines() if line.startswith("✘")]
    assert len(fail_lines) == 1, result.output
    for name in names:
        assert str(name) in result.output, (name, result.output)


@pytest.fixture(scope="module")
def trained(
    overfit: tuple[Any, list[Example]],
    en_train_data: list[tuple[str, list[tuple[int, int, str]]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """conftest's overfitted crf_ner saved, plus inputs for the commands."""
    nlp, examples = overfit
    root = tmp_path_factory.mktemp("cli")
    nlp.to_disk(root / "model")
    DocBin(docs=[eg.reference for eg in examples]).to_disk(root / "dev.spacy")
    texts = [text for text, _ in en_train_data] + ["Zorblat quixed the flumbering vorp."]
    (root / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
    spacy.blank("en").to_disk(root / "blank")
    (root / "no-config").mkdir()
    return {
        "nlp": nlp,
        "root": root,
        "model": root / "model",
        "examples": examples,
        "dev": root / "dev.spacy",
        "texts": root / "texts.txt",
        "n_texts": len(texts),
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


# ------------------------------------------------------------ fresh processes


def script() -> str:
    found = shutil.which("spacy-crf-ner", path=str(Path(sys.executable).parent))
    assert found, "the spacy-crf-ner console script is not installed: pip install -e . again"
    return found


@pytest.mark.slow
@pytest.mark.parametrize("how", ["module", "script"])
def test_help_lists_every_command_in_a_fresh_process(how: str) -> None:
    cmd = [sys.executable, "-m", "spacy_crf_ner"] if how == "module" else [script()]
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^\s{2}(\w+)\s", proc.stdout.split("Commands:")[-1], flags=re.M)
    assert listed == COMMANDS, proc.stdout
    prog = "python -m spacy_crf_ner" if how == "module" else "spacy-crf-ner"
    assert f"Usage: {prog} " in proc.stdout


def test_app_is_complete_however_it_is_imported() -> None:
    # Old defect: ``spacy_crf_ner.cli.app`` imported without ``main()`` held only predict,
    # so typer made it a single-command app (``--help`` printed ``Usage: predict``).
    code = (
        "import typer\n"
        "from spacy_crf_ner.cli import app\n"
        "print(sorted(typer.main.get_command(app).commands))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(COMMANDS)


# Prints {command: [exit code, help text]} for each command named on its command line, each
# run through ``python -m spacy_crf_ner``'s entry point in this one fresh process: a process
# per command cost ~4 s of imports each (a tenth of the CLI tests' time) to test the same.
HELP_SCRIPT = """
import contextlib, io, json, sys
from spacy_crf_ner.cli import module_main

helps = {}
for command in sys.argv[1:]:
    sys.argv = ["spacy_crf_ner", command, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            module_main()
            code = 0
        except SystemExit as exit:
            code = exit.code
    helps[command] = [code, out.getvalue()]
print(json.dumps(helps))
"""


@pytest.mark.slow
def test_each_command_help_in_a_fresh_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, *COMMANDS],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    helps = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(helps) == sorted(COMMANDS)
    for command, (code, text) in helps.items():
        assert code == 0, (command, text)
        assert f"Usage: python -m spacy_crf_ner {command} " in text, text
        assert "--verbose" in text, text
        if command in MODEL_COMMANDS:
            assert "--gpu-id" in text and "MODEL" in text, text


@pytest.mark.slow
def test_rank_end_to_end_through_the_console_script(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "queue.jsonl"
    proc = subprocess.run(
        [script(), "rank", trained["model"], trained["texts"], "--output", out, "--limit", "3"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(out)) == 3
    missing = tmp_path / "missing-model"
    proc = subprocess.run(
        [script(), "rank", missing, trained["texts"], "-o", tmp_path / "q.jsonl"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------------- predict


def test_predict_prints_entities_with_probabilities(trained: dict[str, Any]) -> None:
    result = invoke("predict", trained["model"], "Angela Merkel visited New York City last May.")
    assert result.exit_code == 0, result.output
    assert "Angela Merkel" in result.output and "PERSON" in result.output
    assert re.search(r"0\.\d{3}", result.output)  # the entity's probability
    result = invoke("predict", trained["model"], "The weather was nice.", "--gpu-id", "-1")
    assert result.exit_code == 0 and "no entities" in result.output


def test_predict_errors_are_one_line(trained: dict[str, Any], tmp_path: Path) -> None:
    # Old defect: ``predict missing_model x`` printed a traceback.
    missing = tmp_path / "missing_model"
    assert_user_error(invoke("predict", missing, "x"), missing)
    assert_user_error(invoke("predict", trained["root"] / "no-config", "x"), "no config.cfg")
    assert_user_error(invoke("predict", trained["texts"], "x"), trained["texts"], "is a file")
    assert_user_error(invoke("predict", trained["root"] / "blank", "x"), "doc.ents")


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke("predict", tmp_path / "missing", "x", "--verbose")
    assert result.exit_code == 1
    assert "Traceback" in result.output and "FileNotFoundError" in result.output


# ------------------------------------------------------------------------- rank


def test_rank_by_entity_with_limit(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "q.jsonl"
    args = ["rank", trained["model"], trained["texts"], "-o", out, "--by", "entity"]
    result = invoke(*args, "--limit", "2", "--gpu-id", "-1")
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert sorted(r["index"] for r in records) == [0, 1]  # the first two inputs
    for record in records:
        probs = [e["prob"] for e in record["entities"]]
        assert record["uncertainty"] == pytest.approx(1 - min(probs) if probs else 0, abs=1e-6)
    # .spacy input: --limit keeps the first N docs (old: --limit -1 dropped the last one).
    result = invoke("rank", trained["model"], trained["dev"], "-o", tmp_path / "d.jsonl", "-n", "4")
    assert result.exit_code == 0, result.output
    assert sorted(r["index"] for r in read_jsonl(tmp_path / "d.jsonl")) == [0, 1, 2, 3]


def test_rank_writes_every_input_without_limit(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "q.jsonl"
    assert invoke("rank", trained["model"], trained["texts"], "-o", out).exit_code == 0
    values = [r["uncertainty"] for r in read_jsonl(out)]
    assert len(values) == trained["n_texts"] and values == sorted(values, reverse=True)


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_rank_refuses_a_limit_below_one(
    trained: dict[str, Any], tmp_path: Path, limit: str
) -> None:
    # Old defect: --limit -1 silently wrote nothing for .txt and dropped the last .spacy doc.
    for data in (trained["texts"], trained["dev"]):
        out = tmp_path / "q.jsonl"
        assert_user_error(
            invoke("rank", trained["model"], data, "-o", out, "--limit", limit), "--limit"
        )
        assert not out.exists()


def test_rank_output_errors(trained: dict[str, Any], tmp_path: Path) -> None:
    model, texts = trained["model"], trained["texts"]
    # Old defect: an output directory gave an IsADirectoryError traceback.
    assert_user_error(invoke("rank", model, texts, "-o", tmp_path), tmp_path, "is a directory")
    existing = tmp_path / "saved.jsonl"
    existing.write_text("keep me\n", encoding="utf8")
    assert_user_error(invoke("rank", model, texts, "-o", existing), existing, "--overwrite")
    assert existing.read_text(encoding="utf8") == "keep me\n"
    assert invoke("rank", model, texts, "-o", existing, "--overwrite").exit_code == 0
    assert len(read_jsonl(existing)) == trained["n_texts"]
    missing = tmp_path / "missing_model"
    assert_user_error(invoke("rank", missing, texts, "-o", tmp_path / "q.jsonl"), missing)
    assert_user_error(invoke("rank", trained["root"] / "blank", texts, "-o", tmp_path / "q.jsonl"),
                      "no crf_ner component")  # fmt: skip
    assert_user_error(invoke("rank", model, tmp_path / "none.txt", "-o", tmp_path / "q.jsonl"),
                      tmp_path / "none.txt")  # fmt: skip
    assert_user_error(invoke("rank", model, texts, "-o", tmp_path / "q.jsonl", "--by", "x"), "--by")
    assert_user_error(
        invoke("rank", model, texts, "-o", tmp_path / "q.jsonl", "-f", "x"), "--format"
    )
    assert not list(tmp_path.glob("q.jsonl*")) and not list(tmp_path.glob(".*tmp"))


def test_rank_queue_for_prodigy_and_doccano(trained: dict[str, Any], tmp_path: Path) -> None:
    model, texts = trained["model"], trained["texts"]
    assert invoke("rank", model, texts, "-o", tmp_path / "p.jsonl", "-f", "prodigy").exit_code == 0
    assert invoke("rank", model, texts, "-o", tmp_path / "d.jsonl", "-f", "doccano").exit_code == 0
    assert invoke("rank", model, texts, "-o", tmp_path / "r.jsonl").exit_code == 0
    ours, prodigy, doccano = (read_jsonl(tmp_path / f) for f in ("r.jsonl", "p.jsonl", "d.jsonl"))
    assert [t["text"] for t in prodigy] == [r["text"] for r in ours] == [t["text"] for t in doccano]
    for record, task, line in zip(ours, prodigy, doccano, strict=True):
        ents = [(e["start"], e["end"], e["label"]) for e in record["entities"]]
        assert [(s["start"], s["end"], s["label"]) for s in task["spans"]] == ents
        assert [tuple(x) for x in line["label"]] == ents
        for meta in (task["meta"], line["meta"]):
            assert meta["uncertainty"] == record["uncertainty"]
            assert [e["prob"] for e in meta["entity_probs"]] == [
                e["prob"] for e in record["entities"]
            ]
        tokens = task["tokens"]
        assert "".join(t["text"] + " " * t["ws"] for t in tokens) == task["text"]
        for span in task["spans"]:
            assert tokens[span["token_start"]]["start"] == span["start"]
            assert tokens[span["token_end"]]["end"] == span["end"]


def test_round_trip_rank_annotate_convert_train(
    trained: dict[str, Any], small_model: dict, tmp_path: Path
) -> None:
    """rank --format prodigy/doccano -> (the tool accepts the pre-annotations) -> convert ->
    train, on the shipped sample."""
    corpus = tmp_path / "corpus"
    sample = ROOT / "assets" / "en_sample" / "dev.iob"
    assert invoke("convert", sample, "-o", corpus).exit_code == 0
    queue = tmp_path / "queue.jsonl"
    args = ["rank", trained["model"], corpus / "dev.iob.spacy", "-o", queue, "-n", "12"]
    assert invoke(*args, "--format", "prodigy").exit_code == 0
    tasks = read_jsonl(queue)
    annotated = tmp_path / "annotated.jsonl"  # what Prodigy's db-out gives: answer added
    annotated.write_text("".join(json.dumps({**t, "answer": "accept"}) + "\n" for t in tasks))
    result = invoke("convert", annotated, "-o", corpus)
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(corpus / "annotated.jsonl.spacy").get_docs(trained["nlp"].vocab))
    assert [d.text for d in docs] == [t["text"] for t in tasks]
    assert [[t.text for t in d] for d in docs] == [[t["text"] for t in x["tokens"]] for x in tasks]
    assert [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs] == [
        [(s["start"], s["end"], s["label"]) for s in t["spans"]] for t in tasks
    ]
    # doccano: texts only; convert tokenizes them again.
    doccano = tmp_path / "doccano.jsonl"
    assert (
        invoke("rank", trained["model"], trained["texts"], "-o", doccano, "-f", "doccano").exit_code
        == 0
    )
    assert invoke("convert", doccano, "-o", corpus).exit_code == 0
    docs += list(DocBin().from_disk(corpus / "doccano.jsonl.spacy").get_docs(trained["nlp"].vocab))
    # Train a fresh pipeline on the converted docs.
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": small_model})
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    losses: dict[str, float] = {}
    for _ in range(2):
        nlp.update(examples, sgd=optimizer, losses=losses)
    assert losses["crf_ner"] > 0
    labels = {e.label_ for d in docs for e in d.ents}
    assert labels and labels <= set(nlp.get_pipe("crf_ner").labels)


# ----------------------------------------------------------------------- render


def test_render_shows_probabilities(trained: dict[str, Any], tmp_path: Path) -> None:
    # Old defect: README says render shows probabilities; run_render never turned them on.
    out = tmp_path / "ents.html"
    result = invoke("render", trained["model"], trained["texts"], "-o", out)
    assert result.exit_code == 0, result.output
    assert re.search(r"<span[^>]*>\s*(PERSON|LOC|ORG) \d\.\d\d\s*</span>", out.read_text())
    again = invoke(
        "render", trained["model"], trained["texts"], "-o", out, "-g", "-1", "--overwrite"
    )
    assert again.exit_code == 0, again.output
    assert_user_error(
        invoke("render", trained["model"], trained["texts"], "-o", out), out, "--overwrite"
    )
    assert_user_error(
        invoke("render", trained["model"], trained["texts"], "-o", tmp_path), "is a directory"
    )
    limited = invoke(
        "render", trained["model"], trained["texts"], "-o", tmp_path / "x.html", "-n", "-1"
    )
    assert_user_error(limited, "--limit")


# --------------------------------------------------------------------- evaluate


def test_evaluate_gpu_id_minus_one_and_errors(trained: dict[str, Any], tmp_path: Path) -> None:
    result = invoke("evaluate", trained["model"], trained["dev"], "--gpu-id", "-1")
    assert result.exit_code == 0, result.output
    assert "micro avg" in result.output
    assert_user_error(invoke("evaluate", trained["model"], trained["dev"], "-g", "-2"), "--gpu-id")
    from thinc.util import gpu_is_available

    if not gpu_is_available():  # no GPU, or no CuPy: one line naming the option
        assert_user_error(invoke("predict", trained["model"], "x", "--gpu-id", "0"), "--gpu-id 0")
    assert_user_error(
        invoke("evaluate", trained["model"], trained["dev"], "-b", "0"), "--batch-size"
    )
    assert_user_error(invoke("evaluate", trained["model"], trained["dev"], "-o", trained["texts"]),
                      trained["texts"])  # fmt: skip
    assert_user_error(
        invoke("evaluate", trained["root"] / "no-config", trained["dev"]), "config.cfg"
    )


# -------------------------------------------------------------------- calibrate


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_calibrate_cli_writes_a_copy(
    trained: dict[str, Any], over_confident_gold: list, tmp_path: Path
) -> None:
    """Moved from test_confidence.py, where it passed only with that module's fixture state."""
    nlp, examples = trained["nlp"], trained["examples"]
    nlp.to_disk(tmp_path / "model")
    before = snapshot(tmp_path / "model")
    DocBin(docs=over_confident_gold).to_disk(tmp_path / "dev.spacy")
    args = ["calibrate", tmp_path / "model", tmp_path / "dev.spacy"]
    result = invoke(*args, "--output", tmp_path / "calibrated", "--component", "crf_ner")
    assert result.exit_code == 0, result.output
    assert "Best temperature" in result.output
    assert snapshot(tmp_path / "model") == before  # the input pipeline is untouched
    calibrated = spacy.load(tmp_path / "calibrated")
    temperature = calibrated.get_pipe("crf_ner").temperature
    assert temperature > 1.0 and f"Best temperature {temperature:g}" in result.output
    text = examples[3].reference.text
    assert [(e.start, e.end, e.label_) for e in calibrated(text).ents] == [
        (e.start, e.end, e.label_) for e in nlp(text).ents
    ]
    # An existing, non-empty output or the input itself is refused, with the path named.
    for target in [tmp_path / "calibrated", tmp_path / "model"]:
        assert_user_error(invoke(*args, "--output", target), target)
    assert snapshot(tmp_path / "model") == before


def test_calibrate_errors(trained: dict[str, Any], tmp_path: Path) -> None:
    model, dev = trained["model"], trained["dev"]
    assert_user_error(invoke("calibrate", model, dev, "--component", "ner"), "--component 'ner'",
                      "crf_ner")  # fmt: skip
    assert_user_error(invoke("calibrate", model, tmp_path / "none.spacy"), tmp_path / "none.spacy")
    assert_user_error(invoke("calibrate", tmp_path / "none", dev), tmp_path / "none")
    assert_user_error(invoke("calibrate", trained["root"] / "blank", dev), "no crf_ner component")
    (tmp_path / "file").write_text("x")
    assert_user_error(invoke("calibrate", model, dev, "-o", tmp_path / "file"), tmp_path / "file")


def test_calibrate_refuses_data_without_entity_annotation(
    trained: dict[str, Any], en_train_data: list, tmp_path: Path
) -> None:
    # Old defect: "0.0% correct", T = 8 recommended, exit 0 (and with --output, saved).
    nlp = trained["nlp"]
    unannotated = [Doc(nlp.vocab, words=text.split()) for text, _ in en_train_data]
    assert not any(doc.has_annotation("ENT_IOB") for doc in unannotated)
    data = tmp_path / "raw.spacy"
    DocBin(docs=unannotated).to_disk(data)
    result = invoke("calibrate", trained["model"], data, "--output", tmp_path / "out")
    assert_user_error(result, data, "entity annotation")
    assert "Best temperature" not in result.output and not (tmp_path / "out").exists()


def test_fit_temperature_skips_as_evaluate_does(trained: dict[str, Any]) -> None:
    from spacy_crf_ner.calibrate import NoEntityAnnotationError, fit_temperature

    nlp, examples = trained["nlp"], trained["examples"]
    gold = [eg.reference for eg in examples]
    plain = [Doc(nlp.vocab, words=[t.text for t in doc]) for doc in gold]
    with pytest.raises(NoEntityAnnotationError, match="entity annotation"):
        fit_temperature(nlp, plain)
    # Unannotated docs change nothing; they are not counted.
    alone, mixed = fit_temperature(nlp, gold), fit_temperature(nlp, gold + plain)
    assert (
        (mixed.n_docs, mixed.n_entities)
        == (alone.n_docs, alone.n_entities)
        == (5, alone.n_entities)
    )
    assert [s.log_loss for s in mixed.scores] == pytest.approx([s.log_loss for s in alone.scores])
    # A prediction on a token with missing gold annotation is neither right nor wrong.
    doc = gold[3]  # Angela Merkel visited New York City last May.
    words = [t.text for t in doc]
    partial = Doc(nlp.vocab, words=words, ents=[None, None] + ["O"] * (len(words) - 2))
    result = fit_temperature(nlp, [partial])
    predicted = nlp(doc.text).ents
    assert any(e.start < 2 for e in predicted)
    assert result.n_entities == sum(1 for e in predicted if e.start >= 2)


# ---------------------------------------------------------------------- convert


def test_convert_invalid_scheme_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a.bio"
    path.write_text("a O\n")
    # Old: exit 2.
    assert_user_error(invoke("convert", path, "-o", tmp_path / "out", "--scheme", "XYZ"), "'XYZ'")
    assert_user_error(invoke("convert", path, "-o", tmp_path / "out", "-n", "-1"), "--n-sents")
    assert not (tmp_path / "out").exists()


def test_convert_n_sents(tmp_path: Path) -> None:
    path = tmp_path / "flat.bio"
    path.write_text("".join(f"w{i} O\n\n" for i in range(5)))
    result = invoke("convert", path, "-o", tmp_path / "out", "--n-sents", "2")
    assert result.exit_code == 0, result.output
    docs = list(
        DocBin().from_disk(tmp_path / "out" / "flat.bio.spacy").get_docs(spacy.blank("en").vocab)
    )
    assert [len(list(d.sents)) for d in docs] == [2, 2, 1]
    assert "2 sentences per Doc" in result.output


def test_convert_lists_ten_problems_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.bio"
    path.write_text("".join(f"w{i} O x\n" if i else "w0 O\n" for i in range(14)))
    result = invoke("convert", path, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    listed = re.findall(rf"{re.escape(str(path))}:(\d+): 3 columns", result.output)
    assert listed == [str(n) for n in range(2, 12)]
    assert "... and 3 more" in result.output
    # Repairs in the report: ten listed, the rest counted.
    path = tmp_path / "repair.bio"
    path.write_text("".join("w I-X\n\n" for _ in range(13)))
    result = invoke("convert", path, "-o", tmp_path / "out", "--scheme", "BIO")
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"'I-X' at the start", result.output)) == 10
    assert "... and 3 more (see --stats-json)" in result.output


def test_convert_output_errors_write_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.iob"
    good.write_text("a B-X\n")
    other = tmp_path / "other.iob"
    other.write_text("b O\n")
    # Old: FileExistsError traceback.
    assert_user_error(invoke("convert", good, "-o", good), good, "is a file")
    # Old: traceback after good.iob.spacy had been written.
    out = tmp_path / "out"
    (out / "other.iob.spacy").mkdir(parents=True)
    assert_user_error(
        invoke("convert", good, other, "-o", out), out / "other.iob.spacy", "is a directory"
    )
    assert not (out / "good.iob.spacy").exists()
    # Old: traceback after the outputs were written.
    result = invoke("convert", good, "-o", tmp_path / "o2", "--stats-json", tmp_path)
    assert_user_error(result, "--stats-json", "is a directory")
    assert not (tmp_path / "o2").exists()
    # Old: overwritten silently.
    first = invoke("convert", good, "-o", tmp_path / "o3")
    assert first.exit_code == 0, first.output
    saved = (tmp_path / "o3" / "good.iob.spacy").read_bytes()
    good.write_text("a O\n")
    refused = invoke("convert", good, "-o", tmp_path / "o3")
    assert_user_error(refused, tmp_path / "o3" / "good.iob.spacy", "--overwrite")
    assert (tmp_path / "o3" / "good.iob.spacy").read_bytes() == saved
    assert invoke("convert", good, "-o", tmp_path / "o3", "--overwrite").exit_code == 0
    assert (tmp_path / "o3" / "good.iob.spacy").read_bytes() != saved
