"""Tests of the transformer encoder path (spacy-transformers + crf_ner), fully offline.

A tiny random BERT (the ``tiny_bert`` fixture of conftest.py) is written to a temporary
directory and loaded by absolute path through the configs, so nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
import srsly

pytest.importorskip("spacy_transformers")

import spacy  # noqa: E402
from spacy.language import Language  # noqa: E402
from spacy.tokens import DocBin  # noqa: E402
from spacy.training import Example  # noqa: E402
from spacy.util import fix_random_seed, load_config, load_model_from_config  # noqa: E402
from thinc.api import Adam, NumpyOps, Optimizer, registry  # noqa: E402
from thinc.types import Ragged  # noqa: E402

from spacy_crf_ner.transformer import subword_pooling  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EN_CONFIG = ROOT / "configs" / "transformer_crf.cfg"
ZH_CONFIG = ROOT / "configs" / "transformer_crf_zh.cfg"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
POOLING = "components.crf_ner.model.tok2vec.tok2vec.pooling.mode"

# Whitespace tokens, an emoji, a control character, a CJK character outside the vocab.
ODD_TEXTS = ["I like  London \t and 😀 Berlin\x07 .", "北京 𠀋 猫 x", " ", ""]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub access in-process: the env vars, and the flags read at import time."""
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True)


def build_nlp(model_dir: Path, config: Path = EN_CONFIG, **overrides: object) -> Language:
    """The pipeline of a config file, loading the transformer from ``model_dir``."""
    cfg = load_config(
        config,
        overrides={"paths.transformer_model": str(model_dir.resolve()), **overrides},
        interpolate=True,
    )
    return load_model_from_config(cfg, auto_fill=True, validate=True)


def make_examples(nlp: Language, data: list[tuple[str, list]]) -> list[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def train_step(nlp: Language, examples: list[Example], optimizer: Optimizer) -> dict:
    """One update as ``spacy train`` makes it: every component's backward pass first, then
    the optimizer. (``nlp.update(sgd=...)`` steps each component right after its own
    update, so the transformer would get crf_ner's gradient only at the next call.)"""
    losses: dict[str, float] = {}
    nlp.update(examples, sgd=False, losses=losses)
    for _, component in nlp.pipeline:
        if hasattr(component, "finish_update"):
            component.finish_update(optimizer)
    return losses


def entities(doc: spacy.tokens.Doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def join(items: list[tuple[str, list]]) -> tuple[str, list[tuple[int, int, str]]]:
    """Sentences joined by spaces into one text, with their entity offsets shifted."""
    text, ents = "", []
    for sentence, sentence_ents in items:
        text += " " if text else ""
        ents += [(start + len(text), end + len(text), label) for start, end, label in sentence_ents]
        text += sentence
    return text, ents


# --------------------------------------------------------------------------------------------
# Training through the CLI


def write_docbin(nlp: Language, data: list[tuple[str, list]], path: Path) -> Path:
    docs = [eg.reference for eg in make_examples(nlp, data)]
    DocBin(docs=docs).to_disk(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,data_fixture",
    [(EN_CONFIG, "en_train_data"), (ZH_CONFIG, "zh_train_data")],
    ids=["en", "zh"],
)
def test_spacy_train_cli(
    tiny_bert: Path, tmp_path: Path, config: Path, data_fixture: str, request: pytest.FixtureRequest
) -> None:
    """`spacy train` with each config (a few steps, at a higher rate without warm-up), then
    load the trained pipeline: it reaches F1 >= 0.8 on its training data (1.0 when this was
    written), the F1 that `spacy train` reported for the model in memory.

    The config is copied to project/configs/ and names the model ../models/bert: relative
    to the config, not to the working directory (tmp_path), where it does not exist."""
    data = request.getfixturevalue(data_fixture)
    settings = load_config(config)["nlp"]
    blank = spacy.blank(settings["lang"], config={"nlp": {"tokenizer": settings["tokenizer"]}})
    corpus = write_docbin(blank, data, tmp_path / "train.spacy")
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    shutil.copy(config, project / "configs" / config.name)
    shutil.copytree(tiny_bert, project / "models" / "bert")
    assert not (tmp_path / "../models/bert").exists()
    command = [
        sys.executable, "-m", "spacy", "train", str(project / "configs" / config.name),
        "--output", str(tmp_path / "out"),
        "--paths.train", str(corpus),
        "--paths.dev", str(corpus),
        "--paths.transformer_model", "../models/bert",
        "--training.max_steps", str(TRAIN_STEPS),
        "--training.eval_frequency", str(TRAIN_STEPS),
        "--training.accumulate_gradient", "1",
        "--training.optimizer.learn_rate.warmup_steps", "1",
        "--training.optimizer.learn_rate.initial_rate", "0.01",
        "--initialize.after_init.learn_rate_scale", "0.1",
    ]  # fmt: skip
    env = {**os.environ, **OFFLINE}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = tmp_path / "out" / "model-last"
    trained_f1 = srsly.read_json(model / "meta.json")["performance"]["ents_f"]
    assert trained_f1 >= 0.8, result.stdout[-3000:]
    loaded = spacy.load(model)
    assert loaded.pipe_names == ["transformer", "crf_ner"]
    assert loaded.evaluate(make_examples(loaded, data))["ents_f"] == pytest.approx(trained_f1)
    predicted = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in loaded.pipe(
        text for text, _ in data
    )]  # fmt: skip
    assert sum(p == gold for p, (_, gold) in zip(predicted, data, strict=True)) >= len(data) - 1


# `spacy train` steps of test_spacy_train_cli (one update per step: the sentences are one batch).
TRAIN_STEPS = 20


def test_resolve_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths: the config's folder first, then the working directory; hub names
    pass through; a ./ ../ or absolute path that exists nowhere is an error naming it."""
    from spacy_crf_ner.transformer import command_line_config_dirs, resolve_model_path

    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "x.cfg"
    config.write_text("[nlp]\n")
    (tmp_path / "configs" / "bert").mkdir()
    (tmp_path / "work" / "bert").mkdir(parents=True)
    (tmp_path / "work" / "other").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    dirs = command_line_config_dirs(["train", str(config), "--output", "out"])
    assert dirs == [tmp_path / "configs"]
    assert resolve_model_path("bert", dirs) == str(tmp_path / "configs" / "bert")
    assert resolve_model_path("./other", dirs) == str(tmp_path / "work" / "other")
    assert resolve_model_path("../work/bert", dirs) == str(tmp_path / "work" / "bert")
    assert resolve_model_path(str(tmp_path / "work" / "bert"), []) == str(tmp_path / "work/bert")
    assert resolve_model_path("roberta-base", dirs) == "roberta-base"
    assert resolve_model_path("FacebookAI/roberta-base", dirs) == "FacebookAI/roberta-base"
    for missing in ["./missing", "../models/missing", str(tmp_path / "missing")]:
        with pytest.raises(ValueError, match="missing") as error:
            resolve_model_path(missing, dirs)
        assert "does not exist" in str(error.value)
    with pytest.raises(ValueError, match=str(tmp_path / "configs")):
        resolve_model_path("./missing", dirs)


def test_resolve_callback_rewrites_the_name(tiny_bert: Path, tmp_path: Path) -> None:
    """The before_init callback turns a config-relative name into the absolute path that
    spacy-transformers then loads."""
    nlp = build_nlp(tiny_bert)
    relative = os.path.relpath(tiny_bert, tmp_path)
    assert relative.startswith("..")
    nlp.get_pipe("transformer").model.attrs["name"] = relative
    callback = spacy.registry.callbacks.get("spacy_crf_ner.resolve_transformer_path.v1")
    callback(config_dir=str(tmp_path))(nlp)
    assert nlp.get_pipe("transformer").model.attrs["name"] == str(tiny_bert.resolve())
    with pytest.raises(ValueError, match="no component 'encoder'"):
        callback(component="encoder")(nlp)


# --------------------------------------------------------------------------------------------
# A trained pipeline: overfitting, saving, long documents


@pytest.fixture(scope="module")
def trained_en(
    tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory, en_train_data: list
) -> Iterator[tuple]:
    """The English config trained on en_train_data until it fits; it loads a copy of the tiny
    BERT, that the save/load test deletes."""
    model_copy = tmp_path_factory.mktemp("bert_copy") / "model"
    shutil.copytree(tiny_bert, model_copy)
    fix_random_seed(0)
    nlp = build_nlp(model_copy)
    # The sentences, and a 100-token doc of them, so that the tiny BERT sees entities at
    # many positions of its windows.
    examples = make_examples(nlp, [*en_train_data, join(en_train_data * 3)])
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.002)
    random.seed(0)
    for _ in range(25):
        random.shuffle(examples)
        train_step(nlp, examples, optimizer)
    yield nlp, model_copy


def test_overfit_to_f1_1(trained_en: tuple, en_train_data: list) -> None:
    nlp, _ = trained_en
    scores = nlp.evaluate(make_examples(nlp, en_train_data))
    assert scores["ents_f"] == 1.0
    for text, ents in en_train_data:
        doc = nlp(text)
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == ents


def test_save_delete_source_load(trained_en: tuple, tmp_path: Path, en_train_data: list) -> None:
    """The transformer's weights and tokenizer are saved in the pipeline."""
    nlp, model_copy = trained_en
    texts = [text for text, _ in en_train_data] + ["Shaka Khan visited Paris and Berlin."]
    expected = [entities(doc) for doc in nlp.pipe(texts)]
    assert sum(map(len, expected)) >= 9
    source = str(model_copy.resolve())
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(model_copy)
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.config["paths"]["transformer_model"] == source
    assert not model_copy.exists()
    assert [entities(doc) for doc in loaded.pipe(texts)] == expected


def test_long_document_across_windows(trained_en: tuple, en_train_data: list) -> None:
    """A 5,400-token doc: strided windows, one CRF sequence, entities at every window edge."""
    nlp, _ = trained_en
    text, char_ents = join([en_train_data[3]] * 600)
    doc = nlp(text)
    assert len(doc) > 5000
    gold = {(span.start, span.end, span.label_) for span in (
        doc.char_span(start, end, label=label) for start, end, label in char_ents
    )}  # fmt: skip
    windows = nlp.get_pipe("transformer").model.attrs["get_spans"]([doc])[0]
    assert len(windows) > 40
    edges = {span.start for span in windows} | {span.end for span in windows}
    across = {ent for ent in gold if any(ent[0] < edge < ent[1] for edge in edges)}
    assert len(across) >= 10
    predicted = set(entities(doc))
    assert any(start > 4000 for start, _, _ in predicted)
    assert len(predicted & across) >= 0.9 * len(across)
    assert len(predicted & gold) >= 0.95 * max(len(gold), len(predicted))


# --------------------------------------------------------------------------------------------
# Odd tokens and pooling


@pytest.mark.parametrize("use_fast", [True, False], ids=["fast", "slow"])
@pytest.mark.parametrize("mode", ["first", "mean"])
def test_tokens_without_word_pieces(
    tiny_bert: Path, mode: str, use_fast: bool, en_train_data: list
) -> None:
    """Whitespace, emoji, control characters and unknown CJK characters: train and predict.

    Thinc's reduce_first.v1 raises on tokens without word pieces; subword_pooling gives them
    zeros. The slow tokenizer can't align [UNK] at all, the fast one aligns it by offsets.
    """
    fix_random_seed(0)
    nlp = build_nlp(
        tiny_bert,
        **{POOLING: mode, "components.transformer.model.tokenizer_config.use_fast": use_fast},
    )
    examples = make_examples(nlp, en_train_data[:2]) + [
        Example.from_dict(nlp.make_doc(ODD_TEXTS[0]), {"entities": [(8, 14, "LOC")]}),
        Example.from_dict(nlp.make_doc(ODD_TEXTS[1]), {"entities": [(0, 2, "LOC")]}),
        Example.from_dict(nlp.make_doc(""), {"entities": []}),
    ]
    nlp.initialize(lambda: examples)
    losses = nlp.update(examples, sgd=Adam(0.001))
    assert math.isfinite(losses["crf_ner"]) and losses["crf_ner"] > 0
    docs = list(nlp.pipe(ODD_TEXTS))
    assert [len(doc) for doc in docs] == [len(nlp.make_doc(text)) for text in ODD_TEXTS]
    assert (docs[0]._.trf_data.align.lengths == 0).any()
    if not use_fast:  # the emoji and the unknown CJK characters: [UNK], not aligned
        assert docs[0]._.trf_data.align.lengths[6] == 0
        assert (docs[1]._.trf_data.align.lengths[[1, 2]] == 0).all()
    emissions = nlp.get_pipe("crf_ner").model.predict(docs)
    assert all(
        numpy.isfinite(e).all() and e.shape[0] == len(d)
        for e, d in zip(emissions, docs, strict=True)
    )


def test_reduce_first_fails_on_empty_tokens() -> None:
    """Why subword_pooling exists: Thinc's reduce_first rejects zero-length segments."""
    X = Ragged(numpy.ones((3, 4), dtype="float32"), numpy.asarray([2, 0, 1], dtype="int32"))
    with pytest.raises(ValueError):
        registry.layers.get("reduce_first.v1")()(X, is_train=False)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_subword_pooling_values_and_gradients(dtype: str) -> None:
    ops = NumpyOps()
    X = numpy.arange(12, dtype="float32").reshape(6, 2).astype(dtype)
    lengths = numpy.asarray([2, 0, 1, 3], dtype="int32")
    first = subword_pooling("first")
    mean = subword_pooling("mean")
    Yf, bp_first = first(Ragged(X, lengths), is_train=True)
    Ym, bp_mean = mean(Ragged(X, lengths), is_train=True)
    assert Yf.dtype == Ym.dtype == numpy.float32
    numpy.testing.assert_allclose(Yf, [[0, 1], [0, 0], [4, 5], [6, 7]])
    numpy.testing.assert_allclose(Ym, [[1, 2], [0, 0], [4, 5], [8, 9]])
    dY = ops.asarray2f([[1, 1], [5, 5], [2, 2], [3, 3]])
    dXf = bp_first(dY)
    dXm = bp_mean(dY)
    assert dXf.dataXd.dtype == dXm.dataXd.dtype == numpy.dtype(dtype)
    numpy.testing.assert_allclose(dXf.dataXd[:, 0], [1, 0, 2, 3, 0, 0])
    numpy.testing.assert_allclose(dXm.dataXd[:, 0], [0.5, 0.5, 2, 1, 1, 1])
    with pytest.raises(ValueError, match="pooling mode"):
        subword_pooling("last")


def test_pooling_first_and_mean_give_different_vectors(
    tiny_bert: Path, en_train_data: list
) -> None:
    """Same transformer output: multi-piece tokens differ, single-piece tokens do not."""
    nlp = build_nlp(tiny_bert)
    nlp.initialize(lambda: make_examples(nlp, en_train_data))
    doc = nlp("Shakas like Berlin")
    assert list(doc._.trf_data.align.lengths) == [2, 1, 1]  # shaka ##s | like | berlin
    listener = nlp.get_pipe("crf_ner").model.get_ref("tok2vec").get_ref("tok2vec")
    trfs2arrays = listener.layers[1]
    first = listener.predict([doc])[0]
    trfs2arrays.layers[0] = subword_pooling("mean")
    mean = listener.predict([doc])[0]
    assert first.shape == mean.shape == (3, 32)
    assert not numpy.allclose(first[0], mean[0])
    numpy.testing.assert_allclose(first[1:], mean[1:])


@pytest.mark.parametrize("mode", ["first", "mean"])
def test_pooling_where_windows_overlap(tiny_bert: Path, mode: str) -> None:
    """Windows of 8 tokens every 6: a token in an overlap has a word piece in two windows.
    "first" takes the earlier window's vector, "mean" the average of both; both computed
    here from the transformer's output and the alignment."""
    nlp = build_nlp(
        tiny_bert,
        **{
            POOLING: mode,
            "components.transformer.model.get_spans.window": 8,
            "components.transformer.model.get_spans.stride": 6,
        },
    )
    nlp.get_pipe("crf_ner").add_label("LOC")
    nlp.initialize()
    doc = nlp("i like london and berlin . " * 5)  # one word piece per token
    trf_data = doc._.trf_data
    hidden = trf_data.model_output.last_hidden_state
    assert hidden.shape[0] == 5  # windows at tokens 0, 6, 12, 18, 24 of 30
    flat = hidden.reshape(-1, hidden.shape[-1])
    lengths = trf_data.align.lengths
    pieces = numpy.split(trf_data.align.dataXd, numpy.cumsum(lengths)[:-1])
    overlaps = [i for i, n in enumerate(lengths) if n == 2]
    assert overlaps == [6, 7, 12, 13, 18, 19, 24, 25] and set(lengths) == {1, 2}
    listener = nlp.get_pipe("crf_ner").model.get_ref("tok2vec").get_ref("tok2vec")
    vectors = listener.predict([doc])[0]
    for i, rows in enumerate(pieces):
        expected = flat[min(rows)] if mode == "first" else flat[rows].mean(axis=0)
        numpy.testing.assert_allclose(vectors[i], expected, rtol=1e-5, atol=1e-6)
    for i in overlaps:  # the two windows' vectors differ: different context
        assert not numpy.allclose(flat[pieces[i][0]], flat[pieces[i][1]], atol=1e-4)


def test_configure_transformer_errors(tiny_bert: Path) -> None:
    configure = spacy.registry.callbacks.get("spacy_crf_ner.configure_transformer.v1")
    with pytest.raises(ValueError, match="freeze_layers must be -1, 0 or positive: -2"):
        configure(freeze_layers=-2)
    with pytest.raises(ValueError, match="learn_rate_scale must be >= 0: -0.5"):
        configure(learn_rate_scale=-0.5)
    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec")
    with pytest.raises(
        ValueError, match=r"no component 'transformer' in the pipeline \['tok2vec'\]"
    ):
        configure()(nlp)
    with pytest.raises(ValueError, match="component 'tok2vec' has no loaded transformer"):
        configure(component="tok2vec", freeze_layers=1)(nlp)
    nlp.add_pipe("sentencizer")  # no model at all: the same error, not an AttributeError
    with pytest.raises(ValueError, match="component 'sentencizer' has no loaded transformer"):
        configure(component="sentencizer", freeze_layers=1)(nlp)
    # A transformer component: nothing to complain about, the lower layer is frozen.
    nlp = build_nlp(tiny_bert)
    nlp.get_pipe("crf_ner").add_label("LOC")
    nlp.initialize()
    configure(freeze_layers=1)(nlp)
    hf_model = nlp.get_pipe("transformer").model.transformer
    frozen = {name for name, p in hf_model.named_parameters() if not p.requires_grad}
    assert any(".layer.0." in name for name in frozen)
    assert not any(".layer.1." in name for name in frozen)


def test_cased_features(tiny_bert: Path, en_train_data: list) -> None:
    """The uncased transformer can't tell "apple" from "Apple"; the cased features can."""
    nlp = build_nlp(tiny_bert)
    nlp.initialize(lambda: make_examples(nlp, en_train_data))
    cased = nlp.get_pipe("crf_ner").model.get_ref("tok2vec")
    assert cased.get_dim("nO") == 32 + 64
    docs = list(nlp.pipe(["apple bought it", "Apple bought it", ""]))
    listener_out = cased.get_ref("tok2vec").predict(docs[:2])
    numpy.testing.assert_allclose(listener_out[0], listener_out[1], atol=1e-6)
    out = cased.predict(docs)
    assert [o.shape for o in out] == [(3, 96), (3, 96), (0, 96)]
    assert not numpy.allclose(out[0][0], out[1][0])
    numpy.testing.assert_allclose(out[0][1:], out[1][1:], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Freezing, learning-rate scale, grad_factor


def transformer_changes(tiny_bert: Path, data: list, **overrides: object) -> dict[str, float]:
    """Mean absolute change of each group of the transformer's weights after one update."""
    fix_random_seed(0)
    nlp = build_nlp(tiny_bert, **overrides)
    examples = make_examples(nlp, data)
    nlp.initialize(lambda: examples)
    hf_model = nlp.get_pipe("transformer").model.transformer
    before = {name: p.detach().clone() for name, p in hf_model.named_parameters()}
    head = nlp.get_pipe("crf_ner").model.get_ref("output_layer")
    head_before = head.get_param("W").copy()
    optimizer = Adam(0.001, L2=0.01, L2_is_weight_decay=True, grad_clip=1.0)
    losses = train_step(nlp, examples, optimizer)
    assert losses["crf_ner"] > 0
    groups: dict[str, list[float]] = {"embeddings": [], "layer.0": [], "layer.1": []}
    for name, param in hf_model.named_parameters():
        change = (param.detach() - before[name]).abs().mean().item()
        for group, values in groups.items():
            if name.startswith(group) or f"encoder.{group}." in name:
                values.append(change)
    result = {group: float(numpy.mean(values)) for group, values in groups.items()}
    result["head"] = float(numpy.abs(head.get_param("W") - head_before).mean())
    return result


@pytest.mark.slow
def test_freeze_layers_and_learn_rate_scale(tiny_bert: Path, en_train_data: list) -> None:
    after_init = "initialize.after_init"
    base = transformer_changes(tiny_bert, en_train_data, **{f"{after_init}.learn_rate_scale": 1.0})
    assert min(base.values()) > 0
    # The transformer's rate is scaled; the head's is not (Adam's first step ~ lr * sign).
    scaled = transformer_changes(
        tiny_bert, en_train_data, **{f"{after_init}.learn_rate_scale": 0.1}
    )
    assert 0.07 < scaled["layer.1"] / base["layer.1"] < 0.13
    assert scaled["head"] == pytest.approx(base["head"], rel=0.05)
    # Lower layers frozen: no change at all; the top layer trains.
    lower = transformer_changes(
        tiny_bert,
        en_train_data,
        **{f"{after_init}.freeze_layers": 1, f"{after_init}.learn_rate_scale": 1.0},
    )
    assert lower["embeddings"] == lower["layer.0"] == 0.0
    assert lower["layer.1"] > 0 and lower["head"] > 0
    # All frozen: the transformer doesn't move, and crf_ner still trains.
    frozen = transformer_changes(tiny_bert, en_train_data, **{f"{after_init}.freeze_layers": -1})
    assert frozen["embeddings"] == frozen["layer.0"] == frozen["layer.1"] == 0.0
    assert frozen["head"] > 0


@pytest.mark.slow
def test_grad_factor_is_not_a_learning_rate(tiny_bert: Path, en_train_data: list) -> None:
    """What the config's comments say: Adam cancels a constant grad_factor, and 0.0 leaves
    weight decay acting on the transformer."""
    factor = "components.crf_ner.model.tok2vec.tok2vec.grad_factor"
    scale = {"initialize.after_init.learn_rate_scale": 1.0}
    base = transformer_changes(tiny_bert, en_train_data, **scale)
    tenth = transformer_changes(tiny_bert, en_train_data, **scale, **{factor: 0.1})
    assert 0.8 < tenth["layer.1"] / base["layer.1"] < 1.25
    zero = transformer_changes(tiny_bert, en_train_data, **scale, **{factor: 0.0})
    assert 0 < zero["layer.1"] < 0.01 * base["layer.1"]


# --------------------------------------------------------------------------------------------
# Configs and precision


def test_configs_settings() -> None:
    for path, lang in [(EN_CONFIG, "en"), (ZH_CONFIG, "zh")]:
        cfg = load_config(path)
        assert cfg["nlp"]["lang"] == lang
        assert cfg["nlp"]["pipeline"] == ["transformer", "crf_ner"]
        trf = cfg["components"]["transformer"]["model"]
        assert trf["@architectures"] == "spacy-transformers.TransformerModel.v3"
        assert trf["name"] == "${paths.transformer_model}"
        assert trf["get_spans"]["@span_getters"] == "spacy-transformers.strided_spans.v1"
        assert 0 < trf["get_spans"]["stride"] < trf["get_spans"]["window"]
        assert cfg["initialize"]["after_init"]["@callbacks"] == (
            "spacy_crf_ner.configure_transformer.v1"
        )
        assert cfg["initialize"]["before_init"]["@callbacks"] == (
            "spacy_crf_ner.resolve_transformer_path.v1"
        )
    en = load_config(EN_CONFIG)
    assert en["paths"]["transformer_model"] == "roberta-base"
    tok2vec = en["components"]["crf_ner"]["model"]["tok2vec"]
    assert tok2vec["@architectures"] == "spacy_crf_ner.CasedFeatures.v1"
    assert tok2vec["tok2vec"]["@architectures"] == "spacy-transformers.TransformerListener.v1"
    zh = load_config(ZH_CONFIG)
    assert zh["paths"]["transformer_model"] == "bert-base-chinese"
    assert zh["nlp"]["tokenizer"] == {
        "@tokenizers": "spacy.zh.ChineseTokenizer",
        "segmenter": "char",
    }


def test_crf_with_half_precision_emissions() -> None:
    """Under mixed precision the emissions may be float16 (numpy has no bfloat16, so bf16
    can't reach the layer on CPU): the CRF computes in float32 and gives the same result."""
    from spacy_crf_ner.crf_batch import crf_decode, crf_loss, make_segments
    from spacy_crf_ner.layers import CRFLayer

    rng = numpy.random.RandomState(0)
    crf = CRFLayer(nO=5)
    crf.initialize()
    crf.set_param("transitions", rng.normal(size=(5, 5)).astype("float32"))
    emissions = rng.normal(size=(7, 5)).astype("float32")
    segments = make_segments([0, 3], [3, 4])
    gold = numpy.asarray([[0, 1, 2, -1], [4, 4, 0, 1]])
    loss32, grad32, _ = crf_loss(crf, emissions, segments, gold)
    loss16, grad16, params16 = crf_loss(crf, emissions.astype("float16"), segments, gold)
    assert loss16 == pytest.approx(loss32, rel=1e-3)
    numpy.testing.assert_allclose(grad16.astype("float32"), grad32, atol=2e-3)
    assert all(g.dtype == numpy.float32 for g in params16.values())
    numpy.testing.assert_array_equal(
        crf_decode(crf, emissions.astype("float16"), segments),
        crf_decode(crf, emissions, segments),
    )
