"""``annotate`` with the local engine: same entities as ``nlp.pipe``, resumable after SIGKILL,
bad records in errors.jsonl, a changed model refused."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_crf_ner.annotate import Settings, annotate
from spacy_crf_ner.cli import app

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "300"}


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result: Any, *names: Any) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert len([x for x in result.output.splitlines() if x.startswith("✘")]) == 1, result.output
    for name in names:
        assert str(name) in result.output, (name, result.output)


def sample_sentences(limit: int) -> list[str]:
    """Sentences of the shipped English sample (CoNLL IOB, one token per line)."""
    sentences, words = [], []
    for line in (ROOT / "assets" / "en_sample" / "dev.iob").read_text(encoding="utf8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(" ".join(words))
            words = []
            continue
        words.append(line.split()[0])
    if words:
        sentences.append(" ".join(words))
    return sentences[:limit]


@pytest.fixture(scope="module")
def corpus(overfit: Any, en_train_data: list, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The overfitted model on disk, and texts: the training sentences, sample sentences and
    generated ones."""
    nlp, _ = overfit
    root = tmp_path_factory.mktemp("annotate")
    nlp.to_disk(root / "model")
    names = ["Angela Merkel", "Shaka Khan", "Apple", "London", "Paris", "Berlin"]
    generated = [f"{a} met {b} in {c} on day {i}." for i, (a, b, c) in enumerate(
        (names[i % 6], names[(i + 1) % 6], names[(i + 3) % 6]) for i in range(60))]  # fmt: skip
    texts = [t for t, _ in en_train_data] + sample_sentences(40) + generated
    (root / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
    return {"nlp": nlp, "root": root, "model": root / "model", "texts": texts}


def read_shards(out: Path, fmt: str = "jsonl") -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for shard in sorted(out.glob(f"shard-*.{fmt}"))
        for line in shard.read_text(encoding="utf8").splitlines()
    ]


def expected(nlp: Any, texts: list[str]) -> list[list[tuple[int, int, str]]]:
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


def got(records: list[dict[str, Any]]) -> list[list[tuple[int, int, str]]]:
    return [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records]


def test_entities_equal_nlp_pipe_and_workers_write_the_same_bytes(
    corpus: dict, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    settings = {"shard_size": 16, "entity_probs": True, "progress": False}
    summary = annotate(corpus["model"], [corpus["root"] / "texts.txt"],
                       one, Settings(**settings))  # fmt: skip
    annotate(corpus["model"], [corpus["root"] / "texts.txt"], two, Settings(workers=2, **settings))
    records = read_shards(one)
    assert [r["text"] for r in records] == corpus["texts"]
    assert [r["id"] for r in records] == list(range(len(corpus["texts"])))
    assert got(records) == expected(corpus["nlp"], corpus["texts"])
    assert any(r["entities"] for r in records)
    assert all(0 < e["prob"] <= 1 for r in records for e in r["entities"])
    shards = sorted(p.name for p in one.glob("shard-*"))
    assert len(shards) == -(-len(corpus["texts"]) // 16) == summary.shards
    for name in shards:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["summary"]["docs"] == len(corpus["texts"]) == summary.docs
    assert manifest["done"]["1"]["ranges"][0]["first"] == 17
    assert manifest["model"]["meta"]["pipeline"] == ["crf_ner"]
    assert manifest["inputs"][0]["sha256"]
    assert (one / "errors.jsonl").read_text() == ""


def test_jsonl_gzip_docbin_directory_and_spacy_output(corpus: dict, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    texts = corpus["texts"][:12]
    lines = [
        json.dumps({"id": f"doc-{i}", "text": t, "source": "web"}) for i, t in enumerate(texts)
    ]
    with gzip.open(data / "a.jsonl.gz", "wt", encoding="utf8") as stream:
        stream.write("\n".join(lines[:6]) + "\n")
    (data / "b.jsonl").write_text("\n".join(lines[6:]) + "\n", encoding="utf8")
    nlp = corpus["nlp"]
    DocBin(docs=[nlp.make_doc(t) for t in texts[:3]]).to_disk(data / "c.spacy")
    out = tmp_path / "out"
    result = invoke(
        "annotate", corpus["model"], data, "-o", out, "--shard-size", "5", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    records = read_shards(out)
    assert [r["text"] for r in records] == texts + texts[:3]
    assert [r["id"] for r in records[:12]] == [f"doc-{i}" for i in range(12)]
    assert all(r["source"] == "web" for r in records[:12])
    assert got(records) == expected(nlp, texts + texts[:3])
    # DocBin shards for spaCy users: the same entities, the id in user_data.
    spacy_out = tmp_path / "spacy"
    result = invoke("annotate", corpus["model"], data / "b.jsonl", "-o", spacy_out, "-f", "spacy",
                    "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(spacy_out / "shard-00000.spacy").get_docs(nlp.vocab))
    assert [d.user_data["id"] for d in docs] == [f"doc-{i}" for i in range(6, 12)]
    assert [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs] == expected(
        nlp, texts[6:]
    )


def test_bad_records_go_to_errors_jsonl_with_line_numbers(corpus: dict, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    rows = [
        b'{"text": "I like London and Berlin."}',
        b"{not json",
        b'{"id": 7}',
        b"",  # blank: skipped, not an error
        b'{"text": 42}',
        b'{"text": "Caf\xe9 in Paris"}',  # Latin-1 byte: not UTF-8
        b"[1, 2]",
        b'{"text": "Who is Shaka Khan?", "id": "last"}',
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    out = tmp_path / "out"
    result = invoke(
        "annotate", corpus["model"], path, "-o", out, "--shard-size", "2", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert "5 bad records" in result.output
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["file"]) for e in errors] == [(n, str(path)) for n in (2, 3, 5, 6, 7)]
    assert "invalid JSON" in errors[0]["error"] and '"text"' in errors[1]["error"]
    assert "not UTF-8" in errors[3]["error"]
    records = read_shards(out)
    assert [r["id"] for r in records] == [0, "last"]
    assert json.loads((out / "manifest.json").read_text())["summary"]["errors"] == 5


def test_changed_model_or_settings_refused_on_resume_unless_restart(
    corpus: dict, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(corpus["model"], model)
    out = tmp_path / "out"
    args = ["annotate", model, corpus["root"] / "texts.txt", "-o", out, "--no-progress"]
    assert invoke(*args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_user_error(invoke(*args, "--shard-size", "7"), out, "settings", "--restart")
    original_meta = (model / "meta.json").read_bytes()
    meta = json.loads(original_meta)
    meta["version"] = "0.0.2"
    (model / "meta.json").write_text(json.dumps(meta))
    assert_user_error(invoke(*args), out, "model", "--restart")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    # A done shard whose file was deleted is redone by a rerun (same model and settings).
    (model / "meta.json").write_bytes(original_meta)
    (out / "shard-00000.jsonl").unlink()
    assert invoke(*args).exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    result = invoke(*args, "--restart", "--shard-size", "50")
    assert result.exit_code == 0, result.output
    assert len(read_shards(out)) == len(corpus["texts"])
    assert len(list(out.glob("shard-*"))) == -(-len(corpus["texts"]) // 50)


def test_user_errors_are_one_line(corpus: dict, tmp_path: Path, monkeypatch: Any) -> None:
    texts = corpus["root"] / "texts.txt"
    missing = tmp_path / "no.txt"
    assert_user_error(invoke("annotate", corpus["model"], missing, "-o", tmp_path / "o"), missing)
    assert_user_error(invoke("annotate", corpus["model"], str(tmp_path / "*.jsonl"), "-o",
                             tmp_path / "o"), "matches no")  # fmt: skip
    assert_user_error(invoke("annotate", tmp_path / "nomodel", texts, "-o", tmp_path / "o"),
                      tmp_path / "nomodel")  # fmt: skip
    assert_user_error(invoke("annotate", corpus["model"], texts, "-o", tmp_path / "o", "-w", "0"),
                      "--workers")  # fmt: skip
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    assert_user_error(invoke("annotate", corpus["model"], texts, "-o", busy), busy, "not empty")
    assert (busy / "mine.txt").read_text() == "keep me"
    monkeypatch.setitem(sys.modules, "ray", None)
    assert_user_error(invoke("annotate", corpus["model"], texts, "-o", tmp_path / "r",
                             "--engine", "ray"), "spacy-crf-ner[distributed]")  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_every_id_exactly_once(
    corpus: dict, tmp_path: Path
) -> None:
    n_docs = 3000
    path = tmp_path / "many.jsonl"
    base = corpus["texts"]
    path.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": base[i % len(base)]}) + "\n"
                for i in range(n_docs)),
        encoding="utf8",
    )  # fmt: skip
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spacy_crf_ner", "annotate", str(corpus["model"]), str(path),
           "-o", str(out), "--shard-size", "50", "--workers", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    try:
        # Wait (event, not time) until a few shards are done, then SIGKILL the whole group.
        while proc.poll() is None:
            if manifest.is_file():
                try:
                    done = len(json.loads(manifest.read_text())["done"])
                except ValueError:
                    done = 0
                if done >= 3:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stderr:
            proc.stderr.close()
    done = json.loads(manifest.read_text())["done"]
    done_before = len(done)
    # Done shards are kept as they are (same file, not rewritten) by the rerun.
    inodes = {info["file"]: (out / info["file"]).stat().st_ino for info in done.values()}
    assert 3 <= done_before < n_docs // 50
    # As if the kill had also hit the writes of a shard and of the manifest.
    (out / ".shard-00059.jsonl.tmp").write_text('{"id": "partial"')
    (out / ".manifest.json.12345.tmp").write_text("{")
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done_before} done before" in " ".join(rerun.stdout.split())
    records = read_shards(out)
    assert [r["id"] for r in records] == [f"d{i}" for i in range(n_docs)]
    assert not list(out.glob(".*.tmp"))
    assert {name: (out / name).stat().st_ino for name in inodes} == inodes


def test_ray_input_feed_serves_blocks_in_any_order_and_again_until_written(
    tmp_path: Path,
) -> None:
    """The Ray engine's reader (called directly, no Ray needed): blocks asked for out of order
    and twice (a retried task) hold exactly the pending positions that a plain read gives;
    a block asked for after the driver wrote it is an error, not a silent re-read."""
    from spacy_crf_ner.annotate import (
        InputFeed,
        decode_positions,
        iter_positions,
        ray_blocks,
        scan_input,
    )

    lines = [json.dumps({"id": f"j{i}", "text": f"Text {i} é", "src": i}) for i in range(9)]
    lines[4] = '{"text": 5}'  # a bad record keeps its position
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf8")
    (tmp_path / "b.txt").write_text("\n".join(f"line {i}" for i in range(8)), encoding="utf8")
    files = [scan_input(tmp_path / name) for name in ("a.jsonl", "b.txt")]
    settings = Settings(shard_size=5)
    done = {1}  # positions 5-9 were written by an earlier run
    blocks = ray_blocks(files, settings, done, size=3)
    assert blocks == [(0, 3), (3, 5), (10, 13), (13, 15), (15, 17)]
    reference = [p for p in iter_positions(files) if p.index // 5 not in done]
    feed = InputFeed(files, blocks)
    served = {n: decode_positions(feed.block(n)) for n in (2, 0, 4, 2, 1, 3)}
    assert [p for n in range(len(blocks)) for p in served[n]] == reference
    feed.release(5)  # shard 0 written: blocks 0 and 1 are forgotten, block 2 is kept
    assert decode_positions(feed.block(2)) == served[2]
    with pytest.raises(RuntimeError, match="block 1"):
        feed.block(1)
