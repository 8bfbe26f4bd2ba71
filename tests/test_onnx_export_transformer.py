"""``export`` of a transformer-CRF (issue 13): the exported pipeline loads where torch can't be
imported and spacy-transformers is not installed, and gives the torch pipeline's entities and
entity probabilities; windows, word-piece alignment and pooling are reproduced without
spacy-transformers (a tiny random BERT, trained a few steps on the shipped sample)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("tokenizers")
pytest.importorskip("spacy_transformers")

from spacy.util import fix_random_seed, load_config, load_model_from_config  # noqa: E402
from test_onnx_export import (  # noqa: E402
    TORCH_FREE,
    as_json_docs,
    assert_one_line_failure,
    cli,
    leftovers,
    torch_entities,
)
from thinc.api import Adam  # noqa: E402

from spacy_crf_ner.convert import read_column_file  # noqa: E402
from spacy_crf_ner.onnx_pipe import strided_windows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "en_sample"
CONFIG = ROOT / "configs" / "transformer_crf.cfg"
POOLING = "components.crf_ner.model.tok2vec.tok2vec.pooling.mode"
SPANS = "components.transformer.model.get_spans"
# The shipped config (first piece, cased features, windows of 128 tokens every 96: the sample's
# docs have 130-156 tokens, so each has two overlapping windows), and mean pooling straight
# from the listener with windows of 8 tokens every 6 (many overlaps per doc).
VARIANTS = {
    "first-cased": {},
    "mean-plain-8-6": {POOLING: "mean", f"{SPANS}.window": 8, f"{SPANS}.stride": 6},
}
# The torch-free subprocess of test_onnx_export, with spacy-transformers and transformers made
# unimportable too: the exported pipeline needs tokenizers and onnxruntime only.
TRF_FREE = TORCH_FREE.replace(
    'sys.modules["torch"] = None\n',
    'sys.modules["torch"] = None\nsys.modules["spacy_transformers"] = None\n'
    'sys.modules["transformers"] = None\n',
)


def build(tiny_bert: Path, variant: str) -> spacy.Language:
    overrides = {"paths.transformer_model": str(tiny_bert.resolve()), **VARIANTS[variant]}
    if variant != "first-cased":  # the plain listener, without the cased features
        cfg = load_config(CONFIG, overrides=overrides, interpolate=True)
        listener = dict(cfg["components"]["crf_ner"]["model"]["tok2vec"]["tok2vec"])
        cfg["components"]["crf_ner"]["model"]["tok2vec"] = listener
    else:
        cfg = load_config(CONFIG, overrides=overrides, interpolate=True)
    return load_model_from_config(cfg, auto_fill=True, validate=True)


@pytest.fixture(scope="module", params=list(VARIANTS))
def trf_export(request, tiny_bert, tmp_path_factory):
    """A transformer-CRF trained 10 steps on the shipped sample (it predicts entities), on
    disk, and its fp32 export."""
    variant = request.param
    fix_random_seed(0)
    random.seed(0)
    nlp = build(tiny_bert, variant)
    train = read_column_file(SAMPLE / "train.iob").docs
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in train]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.003)
    for _ in range(10):
        random.shuffle(examples)
        nlp.update(examples[:8], sgd=False)
        for _, component in nlp.pipeline:
            component.finish_update(optimizer)
    root = tmp_path_factory.mktemp(f"trf-{variant}")
    nlp.to_disk(root / "torch")
    code, output = cli("export", root / "torch", root / "onnx")
    assert code == 0, output
    return variant, root / "torch", root / "onnx"


def sample_docs() -> list[Doc]:
    """The shipped dev docs (each longer than a 128-token window), one doc of all of them
    (859 tokens), a doc with a whitespace token, and an empty doc."""
    dev = read_column_file(SAMPLE / "dev.iob").docs
    vocab = spacy.blank("en").vocab
    words = [t.text for doc in dev for t in doc]
    spaces = [bool(t.whitespace_) or t.i == len(doc) - 1 for doc in dev for t in doc]
    return [
        *dev,
        Doc(vocab, words=words, spaces=spaces),
        Doc(vocab, words=["Angela", "Merkel", "\n\n", "visited", "London", "."]),
        Doc(vocab, words=[]),
    ]


def test_exported_transformer_crf_loads_without_torch_and_tags_like_torch(trf_export):
    _, torch_path, onnx_path = trf_export
    docs = sample_docs()
    result = subprocess.run(
        [sys.executable, "-c", TRF_FREE, str(onnx_path)],
        input=as_json_docs(docs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout)
    expected = torch_entities(torch_path, docs, entity_probs=True)
    assert sum(len(ents) for ents in expected[:6]) > 0  # the comparison is not vacuous
    assert got["ents"][-1] == expected[-1] == []
    assert [[e[:3] for e in d] for d in got["ents"]] == [[e[:3] for e in d] for d in expected]
    # The sample docs: 1e-4. On the 859-token doc the torch component's float32 CRF is off by
    # ~2e-4 (the exported probabilities are float64: see the float64 test below).
    for i, (ours, theirs) in enumerate(zip(got["ents"], expected, strict=True)):
        tolerance = 1e-3 if i == 6 else 1e-4
        numpy.testing.assert_allclose([e[3] for e in ours], [e[3] for e in theirs], atol=tolerance)
    meta = got["meta"]
    assert meta["runtime"] == "onnxruntime" and meta["int8"] is False
    assert meta["transformer"]["component"] == "transformer"


def test_long_doc_probabilities_match_torch_in_float64(trf_export):
    """On the 859-token doc, the exported probabilities are those of the torch CRF run on the
    same emissions in float64, to 1e-4 (the torch pipeline's own float32 CRF drifts by ~2e-4
    over that length; the entities are the same either way)."""

    class Float64Emissions:
        def __init__(self, model):
            self.model = model

        def predict(self, docs):
            return [x.astype("float64") for x in self.model.predict(docs)]

        def __getattr__(self, name):
            return getattr(self.model, name)

    _, torch_path, onnx_path = trf_export
    config = {"components": {"crf_ner": {"entity_probs": True}}}
    torch_nlp, onnx_nlp = (
        spacy.load(torch_path, config=config),
        spacy.load(onnx_path, config=config),
    )
    torch_pipe = torch_nlp.get_pipe("crf_ner")
    torch_pipe.model = Float64Emissions(torch_pipe.model)
    text = sample_docs()[6].text
    theirs, ours = torch_nlp(text), onnx_nlp(text)
    assert len(ours) == 859 and len(ours.ents) > 0
    assert [(e.start, e.end, e.label_) for e in ours.ents] == [
        (e.start, e.end, e.label_) for e in theirs.ents
    ]
    numpy.testing.assert_allclose(
        [e._.crf_prob for e in ours.ents], [e._.crf_prob for e in theirs.ents], atol=1e-4
    )


def test_exported_pipeline_has_no_transformer_component(trf_export):
    variant, _, onnx_path = trf_export
    nlp = spacy.load(onnx_path)
    assert nlp.pipe_names == ["crf_ner"]
    assert not (onnx_path / "transformer").exists()
    files = {p.name for p in (onnx_path / "crf_ner").iterdir()}
    assert {"transformer.onnx", "tokenizer.json", "model.onnx", "cfg"} <= files
    settings = json.loads((onnx_path / "crf_ner" / "cfg").read_text())
    trf = settings["transformer"]
    assert (trf["window"], trf["stride"]) == ((128, 96) if variant == "first-cased" else (8, 6))
    assert trf["pooling"] == ("first" if variant == "first-cased" else "mean")
    meta = json.loads((onnx_path / "meta.json").read_text())
    assert "transformer" not in meta["pipeline"]
    assert any(r.startswith("tokenizers>=") for r in meta["requirements"])
    assert not any(r.startswith("spacy-transformers") for r in meta["requirements"])


def test_emissions_match_and_the_pipeline_saves_again(trf_export, tmp_path):
    """Emissions to 1e-4 on docs with overlapping windows; to_disk/to_bytes round trips."""
    _, torch_path, onnx_path = trf_export
    torch_nlp, onnx_nlp = spacy.load(torch_path), spacy.load(onnx_path)
    docs = sample_docs()
    ours = onnx_nlp.get_pipe("crf_ner").emissions([onnx_nlp.make_doc(d.text) for d in docs])
    trf_docs = list(torch_nlp.get_pipe("transformer").pipe(torch_nlp.make_doc(d.text)
                                                            for d in docs))  # fmt: skip
    theirs = torch_nlp.get_pipe("crf_ner").model.predict(trf_docs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        numpy.testing.assert_allclose(a, b, atol=1e-4)
    onnx_nlp.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again")
    from_bytes = spacy.util.load_model_from_config(onnx_nlp.config).from_bytes(onnx_nlp.to_bytes())
    texts = [d.text for d in docs[:3]]
    expected = [[(e.start, e.end, e.label_) for e in d.ents] for d in onnx_nlp.pipe(texts)]
    for other in (again, from_bytes):
        assert [[(e.start, e.end, e.label_) for e in d.ents] for d in other.pipe(texts)] == expected


def test_int8_transformer_export_loads_and_tags(trf_export, tmp_path):
    variant, torch_path, onnx_path = trf_export
    if variant != "first-cased":
        pytest.skip("one int8 export is enough")
    out = tmp_path / "int8"
    code, output = cli("export", torch_path, out, "--int8")
    assert code == 0, output
    nlp, torch_nlp = spacy.load(out), spacy.load(torch_path)
    info = nlp.meta["spacy_crf_ner_export"]
    assert info["int8"] is True and info["transformer"]["int8"] == "MatMul weights, per channel"
    texts = [doc.text for doc in sample_docs()]
    found = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    expected = [[(e.start, e.end, e.label_) for e in d.ents] for d in torch_nlp.pipe(texts)]
    hits = sum(len(set(a) & set(b)) for a, b in zip(found, expected, strict=True))
    assert sum(map(len, expected)) > 0 and hits >= 0.75 * sum(map(len, expected))
    quantized = (out / "crf_ner" / "transformer.onnx").read_bytes()
    assert len(quantized) < (onnx_path / "crf_ner" / "transformer.onnx").stat().st_size
    assert b"MatMulInteger" in quantized or b"DynamicQuantize" in quantized
    # one scale per output column of each quantised weight matrix, not one per matrix
    import onnx

    graph = onnx.load_from_string(quantized).graph
    weights = {i.name: i for i in graph.initializer}
    scale_names = [
        n.removesuffix("_quantized") + "_scale" for n in weights if n.endswith("_quantized")
    ]
    scales = [weights[name] for name in scale_names if name in weights]
    assert scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)


def test_two_processes_tag_like_one(trf_export):
    """Forked workers (after the parent has tokenised and run the graphs) tag like one."""
    variant, _, onnx_path = trf_export
    if variant != "first-cased":
        pytest.skip("one variant is enough")
    nlp = spacy.load(onnx_path)
    texts = [doc.text for doc in sample_docs()]
    one = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    two = [
        [(e.start, e.end, e.label_) for e in doc.ents]
        for doc in nlp.pipe(texts, n_process=2, batch_size=2)
    ]
    assert one == two and sum(map(len, one)) > 0


def test_chinese_transformer_crf_exports_and_tags_like_torch(tiny_bert, zh_train_data, tmp_path):
    """configs/transformer_crf_zh.cfg (one token per character, windows of 256 every 192):
    the export check passes although the English check texts, all [UNK] characters to the
    tiny BERT, give exactly tied best paths; Chinese texts tag the same."""
    fix_random_seed(0)
    cfg = load_config(
        ROOT / "configs" / "transformer_crf_zh.cfg",
        overrides={"paths.transformer_model": str(tiny_bert.resolve())},
        interpolate=True,
    )
    nlp = load_model_from_config(cfg, auto_fill=True, validate=True)
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in zh_train_data]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.003)
    for _ in range(30):
        nlp.update(examples, sgd=False)
        for _, component in nlp.pipeline:
            component.finish_update(optimizer)
    nlp.to_disk(tmp_path / "zh")
    code, output = cli("export", tmp_path / "zh", tmp_path / "out")
    assert code == 0, output
    exported = spacy.load(tmp_path / "out")
    texts = [t for t, _ in zh_train_data] + ["".join(t for t, _ in zh_train_data) * 20]
    expected = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    got = [[(e.start, e.end, e.label_) for e in d.ents] for d in exported.pipe(texts)]
    assert got == expected and sum(map(len, expected)) > 0 and len(exported(texts[-1])) > 256


def test_tied_paths_check_refuses_a_worse_path(trf_export):
    """The export check accepts a different path only if it scores as well (a tie)."""
    from spacy_crf_ner.export import ExportError, _check_tied_paths

    variant, torch_path, onnx_path = trf_export
    if variant != "first-cased":
        pytest.skip("one variant is enough")
    torch_nlp, onnx_nlp = spacy.load(torch_path), spacy.load(onnx_path)
    torch_pipe, onnx_pipe = torch_nlp.get_pipe("crf_ner"), onnx_nlp.get_pipe("crf_ner")
    docs = [torch_nlp.make_doc(d.text) for d in sample_docs()[:2]]
    docs = list(torch_nlp.get_pipe("transformer").pipe(docs))
    emissions = torch_pipe.model.predict(docs)
    paths = [numpy.asarray(p) for p in torch_pipe.decode(docs, emissions, scored=False)]

    class Stub:
        def __init__(self, paths):
            self.paths = paths

        def predict(self, docs):
            return self.paths, None

        def _doc_sequences(self, doc):
            return onnx_pipe._doc_sequences(doc)

    _check_tied_paths(torch_pipe, Stub(paths), docs, emissions, 1e-6)  # the same paths
    outside = list(torch_pipe.tag_names).index("O")
    worse = [paths[0], numpy.full_like(paths[1], outside)]
    assert not numpy.array_equal(worse[1], paths[1])
    with pytest.raises(ExportError, match="entities differ"):
        _check_tied_paths(torch_pipe, Stub(worse), docs, emissions, 1e-6)


def test_slow_tokenizer_is_refused(tiny_bert, tmp_path):
    nlp = build(tiny_bert, "first-cased")
    cfg = nlp.config.copy()
    cfg["components"]["transformer"]["model"]["tokenizer_config"]["use_fast"] = False
    nlp = load_model_from_config(cfg, auto_fill=True, validate=True)
    nlp.initialize(
        lambda: [Example.from_dict(nlp.make_doc("Paris is nice"), {"entities": [(0, 5, "LOC")]})]
    )
    nlp.to_disk(tmp_path / "slow")
    code, output = cli("export", tmp_path / "slow", tmp_path / "out")
    assert_one_line_failure(code, output, "slow tokenizer", "use_fast")
    assert leftovers(tmp_path) == ["slow"]


def test_other_pooling_is_refused(tiny_bert, tmp_path):
    nlp = build(tiny_bert, "first-cased")
    cfg = nlp.config.copy()
    listener = cfg["components"]["crf_ner"]["model"]["tok2vec"]["tok2vec"]
    listener["pooling"] = {"@layers": "reduce_mean.v1"}
    nlp = load_model_from_config(cfg, auto_fill=True, validate=True)
    nlp.initialize(
        lambda: [Example.from_dict(nlp.make_doc("Paris is nice"), {"entities": [(0, 5, "LOC")]})]
    )
    nlp.to_disk(tmp_path / "mean")
    code, output = cli("export", tmp_path / "mean", tmp_path / "out")
    assert_one_line_failure(code, output, "reduce_mean.v1", "subword_pooling")
    assert leftovers(tmp_path) == ["mean"]


@pytest.mark.parametrize("n", [0, 1, 5, 95, 96, 127, 128, 129, 192, 224, 225, 1000])
def test_windows_are_spacy_transformers_strided_spans(n):
    from spacy_transformers.span_getters import get_strided_spans

    doc = Doc(spacy.blank("en").vocab, words=["w"] * n)
    expected = [(s.start, s.end) for s in get_strided_spans([doc], window=128, stride=96)[0]]
    assert strided_windows(n, 128, 96) == expected
    expected = [(s.start, s.end) for s in get_strided_spans([doc], window=8, stride=6)[0]]
    assert strided_windows(n, 8, 6) == expected
