"""``export`` (issue 13): a BiLSTM-CRF pipeline exported to ONNX loads without torch and tags
like the torch pipeline; int8 loads and tags; every bad input is one line, exit 1, and
nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from spacy_crf_ner.cli import app  # noqa: E402
from spacy_crf_ner.convert import read_column_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "en_sample"

# A subprocess in which torch cannot be imported, and the installed packages that need torch
# (spacy-transformers, ...) are hidden as if not installed: spaCy loads every factory entry
# point when it makes a pipeline. Prints the entities (and probabilities) of the docs given
# as JSON words/spaces/sentence starts on stdin.
TORCH_FREE = r"""
import importlib.metadata as md, json, sys
sys.modules["torch"] = None
import catalogue

def needs_torch(ep):
    dist = getattr(ep, "dist", None)
    if dist is None or dist.name.replace("_", "-") == "spacy-crf-ner":
        return False
    return any(r.split(";")[0].strip().lower().startswith("torch")
               for r in (dist.requires or []) if "extra ==" not in r)

catalogue.AVAILABLE_ENTRY_POINTS = md.EntryPoints(tuple(
    ep for group in md.entry_points().values() for ep in group if not needs_torch(ep)))
import spacy
from spacy.tokens import Doc

nlp = spacy.load(sys.argv[1], config={"components": {"crf_ner": {"entity_probs": True}}})
out = []
for item in json.load(sys.stdin):
    doc = nlp(Doc(nlp.vocab, words=item["words"], spaces=item["spaces"],
                  sent_starts=item["sent_starts"]))
    out.append([[e.start, e.end, e.label_, e._.crf_prob] for e in doc.ents])
assert sys.modules["torch"] is None
print(json.dumps({"ents": out, "meta": nlp.meta["spacy_crf_ner_export"]}))
"""


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def sample_docs():
    """The shipped English sample: train docs to fit on, dev docs to compare on."""
    train = read_column_file(SAMPLE / "train.iob").docs
    dev = read_column_file(SAMPLE / "dev.iob").docs
    return train, dev


@pytest.fixture(scope="module")
def torch_pipeline(overfit, tmp_path_factory) -> Path:
    """The session's overfitted BiLSTM-CRF (character features, BILUO) on disk: it finds the
    entities of its training sentences, so comparisons have entities to compare."""
    nlp, _ = overfit
    path = tmp_path_factory.mktemp("torch") / "pipeline"
    nlp.to_disk(path)
    return path


def untrained_pipeline(path: Path, train: list[Doc], seed: int, tok2vec: dict, **crf) -> Path:
    """A BiLSTM-CRF initialized on three sample docs (random weights are as good as trained
    ones for comparing emissions), saved to ``path``."""
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    tok2vec = {"@architectures": "spacy_crf_ner.BiLSTMEncoder.v1", "width": 16,
               "embed_size": 300, **tok2vec}  # fmt: skip
    model = {"@architectures": "spacy_crf_ner.CRFTagger.v1", "tok2vec": tok2vec}
    nlp.add_pipe("crf_ner", config={"model": model, **crf})
    nlp.initialize(lambda: [Example(nlp.make_doc(doc.text), doc) for doc in train[:3]])
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def deep_pipeline(tmp_path_factory, sample_docs) -> Path:
    """Another shape: two LSTM layers, no character features, BIOES."""
    tok2vec = {"char_features": 0, "lstm_width": 12, "lstm_depth": 2, "attrs": ["NORM", "SHAPE"]}
    path = tmp_path_factory.mktemp("deep") / "pipeline"
    return untrained_pipeline(path, sample_docs[0], 1, tok2vec, tag_scheme="BIOES")


@pytest.fixture(scope="module")
def char_cnn_pipeline(tmp_path_factory, sample_docs) -> Path:
    """Both character encoders, CharacterEmbed and the character CNN, and the n-gram tables:
    the four embedding blocks the exporter concatenates; and input, NORM-only word and n-gram
    dropout, layers the graph leaves out."""
    tok2vec = {"char_features": 4, "char_cnn": 12, "lstm_width": 8, "input_dropout": 0.3,
               "word_dropout": 0.3, "word_dropout_attrs": ["NORM"], "ngram_size": 3,
               "ngram_rows": 200, "ngram_dropout": 0.3}  # fmt: skip
    path = tmp_path_factory.mktemp("cnn") / "pipeline"
    return untrained_pipeline(path, sample_docs[0], 2, tok2vec)


@pytest.fixture(scope="module")
def ngram_pipeline(tmp_path_factory, sample_docs) -> Path:
    """The Chinese config's shape: hash embeddings and character bigrams only, each with its
    word dropout."""
    tok2vec = {"char_features": 0, "lstm_width": 8, "attrs": ["NORM", "SHAPE"],
               "word_dropout": 0.15, "ngram_size": 2, "ngram_rows": 300,
               "ngram_dropout": 0.3}  # fmt: skip
    path = tmp_path_factory.mktemp("ngrams") / "pipeline"
    return untrained_pipeline(path, sample_docs[0], 3, tok2vec)


@pytest.fixture(scope="module")
def context_pipeline(tmp_path_factory, sample_docs) -> Path:
    """The shipped English encoder's options with the document context on."""
    tok2vec = {"char_features": 0, "char_cnn": 12, "lstm_width": 8, "word_dropout": 0.4,
               "doc_context": True}  # fmt: skip
    path = tmp_path_factory.mktemp("context") / "pipeline"
    return untrained_pipeline(path, sample_docs[0], 4, tok2vec)


@pytest.fixture(scope="module")
def char_lstm_pipeline(tmp_path_factory, sample_docs) -> Path:
    """The character BiLSTM (in place of the CNN) beside spaCy's CharacterEmbed."""
    tok2vec = {"char_features": 4, "char_lstm": 10, "lstm_width": 8, "word_dropout": 0.4}
    path = tmp_path_factory.mktemp("char_lstm") / "pipeline"
    return untrained_pipeline(path, sample_docs[0], 5, tok2vec)


@pytest.fixture(scope="module")
def exported(torch_pipeline, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "exported"
    code, output = cli("export", torch_pipeline, out)
    assert code == 0, output
    return out


def as_json_docs(docs: list[Doc]) -> str:
    return json.dumps(
        [
            {
                "words": [t.text for t in doc],
                "spaces": [bool(t.whitespace_) for t in doc],
                "sent_starts": [bool(t.is_sent_start) for t in doc],
            }
            for doc in docs
        ]  # fmt: skip
    )


def torch_entities(path: Path, docs: list[Doc], **config) -> list[list[list]]:
    nlp = spacy.load(path, config={"components": {"crf_ner": config}})
    out = []
    for doc in docs:
        tagged = nlp(Doc(nlp.vocab, words=[t.text for t in doc],
                         spaces=[bool(t.whitespace_) for t in doc],
                         sent_starts=[bool(t.is_sent_start) for t in doc]))  # fmt: skip
        out.append([[e.start, e.end, e.label_, e._.crf_prob] for e in tagged.ents])
    return out


def test_exported_pipeline_loads_without_torch_and_tags_like_torch(
    torch_pipeline, exported, sample_docs, en_train_data
):
    _, dev = sample_docs
    vocab = spacy.blank("en").vocab
    docs = [
        *(spacy.blank("en")(text) for text, _ in en_train_data),
        *dev,
        Doc(vocab, words=["Angela", "Merkel", "\n\n", "visited", "London"]),
    ]
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(exported)],
        input=as_json_docs(docs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    expected = torch_entities(torch_pipeline, docs, entity_probs=True)
    assert sum(len(ents) for ents in expected) > 0  # the comparison is not vacuous
    assert [[e[:3] for e in d] for d in got["ents"]] == [[e[:3] for e in d] for d in expected]
    ours = numpy.asarray([e[3] for d in got["ents"] for e in d])
    theirs = numpy.asarray([e[3] for d in expected for e in d])
    numpy.testing.assert_allclose(ours, theirs, atol=1e-4)
    meta = got["meta"]
    assert meta["runtime"] == "onnxruntime" and meta["int8"] is False and meta["opset"] == 17


# Words longer than the character CNN's 20 characters, one-character words, whitespace tokens.
ODD_WORDS = "Donaudampfschifffahrtsgesellschaftskapitän met I in São-Paulo-based \n\n X.Y.Z ."


@pytest.mark.parametrize(
    "which",
    ["torch_pipeline", "deep_pipeline", "char_cnn_pipeline", "ngram_pipeline", "context_pipeline",
     "char_lstm_pipeline"],
)  # fmt: skip
def test_emissions_match_the_torch_model(which, request, sample_docs, tmp_path):
    source = request.getfixturevalue(which)
    code, output = cli("export", source, tmp_path / "out")
    assert code == 0, output
    _, dev = sample_docs
    torch_nlp, onnx_nlp = spacy.load(source), spacy.load(tmp_path / "out")
    docs = [onnx_nlp.make_doc(text) for text in [doc.text for doc in dev] + [ODD_WORDS]]
    ours = onnx_nlp.get_pipe("crf_ner").emissions(docs)
    theirs = torch_nlp.get_pipe("crf_ner").model.predict(docs)
    for a, b in zip(ours, theirs, strict=True):
        numpy.testing.assert_allclose(a, b, atol=1e-4)
    tagged = [list(nlp.pipe(doc.text for doc in dev)) for nlp in (torch_nlp, onnx_nlp)]
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in tagged[0]] == [
        [(e.start, e.end, e.label_) for e in d.ents] for d in tagged[1]
    ]


def test_model_graph_alone_gives_the_tags(torch_pipeline, exported, en_train_data):
    """onnxruntime and the graph file only (as a C#/Java/JS runtime would use it): features in,
    tag paths of a ragged batch out, the torch component's tags."""
    import onnxruntime

    from spacy_crf_ner.onnx_pipe import BiLSTMFeatures

    settings = json.loads((exported / "crf_ner" / "cfg").read_text())
    session = onnxruntime.InferenceSession(str(exported / "crf_ner" / "model.onnx"))
    torch_nlp = spacy.load(torch_pipeline)
    docs = [torch_nlp.make_doc(text) for text, _ in en_train_data]
    width = max(len(doc) for doc in docs)
    inputs = BiLSTMFeatures(settings["features"]["tables"], settings["features"]["n_chars"])(
        docs, width
    )
    inputs["lengths"] = numpy.asarray([len(doc) for doc in docs], dtype="int64")
    inputs["allowed"] = numpy.ones((len(docs), width, len(settings["tag_names"])), dtype=bool)
    paths = session.run(["paths"], inputs)[0]
    expected = torch_nlp.get_pipe("crf_ner").predict(docs)
    for row, (doc, tags) in enumerate(zip(docs, expected, strict=True)):
        numpy.testing.assert_array_equal(paths[row, : len(doc)], tags)
        assert (paths[row, len(doc) :] == -1).all()
    names = [settings["tag_names"][t] for t in paths[3, : len(docs[3])]]
    assert any(name != "O" for name in names)


def test_probabilities_candidates_and_sentences_match_torch(torch_pipeline, exported):
    """Entity, path and candidate probabilities at a temperature, with a senter splitting
    docs into CRF sequences (the graph's second decode)."""
    config = {"entity_probs": True, "candidate_threshold": 0.05, "temperature": 1.7}
    texts = ["Angela Merkel visited New York City last May. I like London and Berlin.",
             "Apple bought a small startup in Paris. Who is Shaka Khan?"]  # fmt: skip
    results = []
    for path in (torch_pipeline, exported):
        nlp = spacy.load(path, config={"components": {"crf_ner": config}})
        nlp.add_pipe("sentencizer", first=True)
        docs = list(nlp.pipe(texts))
        results.append(
            [
                (
                    [(e.start, e.end, e.label_) for e in doc.ents],
                    [e._.crf_prob for e in doc.ents],
                    doc._.crf_path_prob,
                    [(s.start, s.end, s.label_) for s in doc.spans["crf_ner_candidates"]],
                    doc.spans["crf_ner_candidates"].attrs["scores"],
                )
                for doc in docs
            ]
        )
    assert len(list(nlp(texts[0]).sents)) == 2
    for theirs, ours in zip(*results, strict=True):
        assert ours[0] == theirs[0]
        numpy.testing.assert_allclose(ours[1], theirs[1], atol=1e-4)
        numpy.testing.assert_allclose(ours[2], theirs[2], atol=1e-4)
        assert ours[3] == theirs[3] and len(ours[3]) > 0
        numpy.testing.assert_allclose(ours[4], theirs[4], atol=1e-4)


def test_int8_export_loads_and_tags(torch_pipeline, exported, en_train_data, tmp_path):
    out = tmp_path / "int8"
    code, output = cli("export", torch_pipeline, out, "--int8")
    assert code == 0, output
    nlp, torch_nlp = spacy.load(out), spacy.load(torch_pipeline)
    assert nlp.meta["spacy_crf_ner_export"]["int8"] is True
    texts = [text for text, _ in en_train_data]
    found = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    expected = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in torch_nlp.pipe(texts)]
    assert sum(map(len, expected)) > 0
    # int8 weights may change a few decisions; on the overfitted sentences it finds most.
    hits = sum(len(set(a) & set(b)) for a, b in zip(found, expected, strict=True))
    assert hits >= 0.75 * sum(map(len, expected))
    size = (out / "crf_ner" / "model.onnx").stat().st_size
    assert size < 0.6 * (exported / "crf_ner" / "model.onnx").stat().st_size


def test_exported_pipeline_saves_and_loads_again(exported, tmp_path):
    nlp = spacy.load(exported)
    text = "Angela Merkel visited New York City last May."
    nlp.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again")
    from_bytes = spacy.util.load_model_from_config(nlp.config).from_bytes(nlp.to_bytes())
    expected = [(e.start, e.end, e.label_) for e in nlp(text).ents]
    assert expected and [(e.start, e.end, e.label_) for e in again(text).ents] == expected
    assert [(e.start, e.end, e.label_) for e in from_bytes(text).ents] == expected


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 1, nothing written


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def assert_one_line_failure(code: int, output: str, *needles: str) -> None:
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✘"), output
    for needle in needles:
        assert needle in lines[0], output


def test_pipeline_without_crf_ner_is_refused(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "plain")
    code, output = cli("export", tmp_path / "plain", tmp_path / "out")
    assert_one_line_failure(code, output, "no crf_ner component", "sentencizer")
    assert leftovers(tmp_path) == ["plain"]


def save_initialized_pipeline(path: Path, tok2vec: dict) -> None:
    """A crf_ner over ``tok2vec``, initialized on one sentence and saved to ``path``."""
    nlp = spacy.blank("en")
    model = {"@architectures": "spacy_crf_ner.CRFTagger.v1", "tok2vec": tok2vec}
    nlp.add_pipe("crf_ner", config={"model": model})
    examples = [Example.from_dict(nlp.make_doc("Paris is nice"), {"entities": [(0, 5, "LOC")]})]
    nlp.initialize(lambda: examples)
    nlp.to_disk(path)


def test_unsupported_architecture_is_named(tmp_path):
    tok2vec = {"@architectures": "spacy.HashEmbedCNN.v2", "width": 16, "depth": 1,
               "embed_size": 100, "window_size": 1, "maxout_pieces": 2,
               "subword_features": True, "pretrained_vectors": None}  # fmt: skip
    save_initialized_pipeline(tmp_path / "cnn", tok2vec)
    code, output = cli("export", tmp_path / "cnn", tmp_path / "out")
    assert_one_line_failure(code, output, "spacy.HashEmbedCNN.v2", "not supported")
    assert leftovers(tmp_path) == ["cnn"]


def test_exported_pipeline_with_two_processes(exported, en_train_data):
    nlp = spacy.load(exported)
    texts = [text for text, _ in en_train_data] * 3
    one = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    two = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, n_process=2)]
    assert one == two and sum(map(len, one)) > 0


def test_existing_output_is_refused_unless_overwrite(torch_pipeline, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, output = cli("export", torch_pipeline, out)
    assert_one_line_failure(code, output, "exists already", "--overwrite")
    assert (out / "mine.txt").read_text() == "keep me"
    code, output = cli("export", torch_pipeline, out, "--overwrite")
    assert code == 0, output
    assert (out / "crf_ner" / "model.onnx").is_file() and not (out / "mine.txt").exists()
    assert leftovers(tmp_path) == ["out"]


def test_input_as_output_is_refused(torch_pipeline):
    code, output = cli("export", torch_pipeline, torch_pipeline, "--overwrite")
    assert_one_line_failure(code, output, "would overwrite the input")


@pytest.mark.parametrize("opset", [12, 99])
def test_unknown_opset_is_refused(torch_pipeline, tmp_path, opset):
    code, output = cli("export", torch_pipeline, tmp_path / "out", "--opset", opset)
    assert_one_line_failure(code, output, f"--opset {opset}")
    assert leftovers(tmp_path) == []


def test_opset_onnxruntime_cannot_run_is_refused(torch_pipeline, tmp_path, monkeypatch):
    """An opset newer than onnxruntime implements: the graphs fail to load there."""
    import onnx
    import onnxruntime

    import spacy_crf_ner.export as export

    def refuse(*args, **kwargs):
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail("opset 17 is not supported")

    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: 17)
    monkeypatch.setattr(export.require_onnxruntime(), "InferenceSession", refuse)
    code, output = cli("export", torch_pipeline, tmp_path / "out")
    assert_one_line_failure(code, output, "cannot run the graph at opset 17")
    assert leftovers(tmp_path) == []


def test_exported_pipeline_is_refused_by_export_and_by_the_torch_component(exported, tmp_path):
    code, output = cli("export", exported, tmp_path / "out")
    assert_one_line_failure(code, output, "exported already")
    with pytest.raises(ValueError, match="exported for onnxruntime"):
        spacy.load(exported, config={"components": {"crf_ner": {"factory": "crf_ner"}}})
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="exported for onnxruntime"):
        nlp.add_pipe("crf_ner").from_disk(exported / "crf_ner")


def test_torch_directory_is_refused_by_the_onnx_component(torch_pipeline):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="holds a torch crf_ner component"):
        nlp.add_pipe("crf_ner_onnx", name="crf_ner").from_disk(torch_pipeline / "crf_ner")


WITHOUT_ONNXRUNTIME = r"""
import sys
sys.modules["onnxruntime"] = None
import spacy
try:
    if sys.argv[1] == "load":
        spacy.load(sys.argv[2])
    else:
        from typer.testing import CliRunner
        from spacy_crf_ner.cli import app
        result = CliRunner().invoke(app, ["export", sys.argv[2], sys.argv[3]])
        print(result.exit_code, result.output.strip())
except ImportError as err:
    print("ImportError", err)
"""


@pytest.mark.slow
def test_without_onnxruntime_both_commands_name_the_extra(torch_pipeline, exported, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for args in (["load", exported], ["export", torch_pipeline, tmp_path / "out"]):
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_ONNXRUNTIME, *map(str, args)],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert 'pip install "spacy-crf-ner[onnx]"' in result.stdout, result.stdout + result.stderr
    assert "1 ✘" in result.stdout
    assert leftovers(tmp_path) == []


def test_length_groups_cover_every_doc_once_with_little_padding():
    from spacy_crf_ner.onnx_pipe import (
        PADDING_SHARE,
        ROWS_PER_CALL,
        TOKENS_PER_CALL,
        _length_groups,
    )

    rng = numpy.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 400, size=500)]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups = list(_length_groups(order, lengths))
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert len(group) <= ROWS_PER_CALL
        assert len(group) == 1 or max(sizes) * len(sizes) <= TOKENS_PER_CALL
        assert len(group) == 1 or max(sizes) * len(sizes) <= (1 + PADDING_SHARE) * sum(sizes)
