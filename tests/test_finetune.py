"""Training a trained ``crf_ner`` further: after ``spacy.load``, with ``source`` in ``spacy
train``, with new labels (``add_label``) and with rehearsal (issue 10, points 3 and 4)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy
import pytest
import spacy
from numpy.testing import assert_array_equal
from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config
from thinc.api import ConfigValidationError

from spacy_crf_ner.tags import get_scheme

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SAMPLE = ROOT / "assets" / "en_sample"

# The BiLSTM configs, shrunk so that a few steps take a fraction of a second.
SMALL_BILSTM = {
    "components.crf_ner.model.tok2vec.width": 16,
    "components.crf_ner.model.tok2vec.embed_size": 200,
    "components.crf_ner.model.tok2vec.lstm_width": 16,
    "components.crf_ner.model.tok2vec.char_features": 4,
    "components.crf_ner.model.tok2vec.char_lstm": 8,
}

EN_DATA = [
    ("Who is Shaka Khan?", [(7, 17, "PER")]),
    ("I like London and Berlin.", [(7, 13, "LOC"), (18, 24, "LOC")]),
    ("Angela Merkel visited New York City.", [(0, 13, "PER"), (22, 35, "LOC")]),
    ("The weather was nice.", []),
]
EN_ORG_DATA = [
    ("Apple bought a small startup in Paris.", [(0, 5, "ORG"), (32, 37, "LOC")]),
    ("She works for Google in London.", [(14, 20, "ORG"), (24, 30, "LOC")]),
]
ZH_DATA = [
    ("我在北京工作", [(2, 4, "LOC")]),
    ("张三去上海了", [(0, 2, "PER"), (3, 5, "LOC")]),
]

SMALL_MODEL = {
    "@architectures": "spacy_crf_ner.CRFTagger.v1",
    "tok2vec": {
        "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
        "width": 32,
        "embed_size": 1000,
        "char_features": 8,
        "lstm_width": 32,
    },
}


def make_examples(nlp: Language, data: list) -> list[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def ents(doc: Doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def crf_weights(nlp: Language) -> dict[str, numpy.ndarray]:
    model = nlp.get_pipe("crf_ner").model
    out = {f"W.{i}": numpy.array(n.get_param("W")) for i, n in enumerate(model.walk())
           if n.has_param("W")}  # fmt: skip
    crf = model.get_ref("crf")
    out.update({name: numpy.array(crf.get_param(name)) for name in crf.param_names})
    return out


def changed(before: dict, after: dict) -> bool:
    return any(not numpy.array_equal(before[key], after[key]) for key in before)


# ------------------------------------------------------------------ shipped configs


def config_pipeline(name: str, request: pytest.FixtureRequest) -> tuple[Language, list]:
    """The pipeline of a shipped config, as spacy.load sees a config: not interpolated."""
    overrides: dict = dict(SMALL_BILSTM) if name.startswith("bilstm") else {}
    if name.startswith("transformer"):
        overrides["paths.transformer_model"] = str(request.getfixturevalue("tiny_bert"))
    config = load_config(CONFIGS / f"{name}.cfg", overrides=overrides)
    nlp = load_model_from_config(config, auto_fill=True)
    return nlp, make_examples(nlp, ZH_DATA if name.endswith("_zh") else EN_DATA)


@pytest.mark.parametrize(
    "name", ["bilstm_crf", "bilstm_crf_zh", "transformer_crf", "transformer_crf_zh"]
)
def test_loaded_pipeline_trains_further(name, request, tmp_path):
    """nlp.update / resume_training / create_optimizer on a pipeline loaded with
    spacy.load: its saved config's optimizer must resolve on its own."""
    fix_random_seed(0)
    nlp, examples = config_pipeline(name, request)
    optimizer = nlp.initialize(lambda: examples)  # nlp.create_optimizer() on the config
    nlp.update(examples, sgd=optimizer)
    nlp.to_disk(tmp_path)

    loaded = spacy.load(tmp_path)
    assert loaded.create_optimizer() is not None
    losses = loaded.update(examples)  # makes its optimizer from the saved config
    assert numpy.isfinite(losses["crf_ner"]) and losses["crf_ner"] > 0

    loaded = spacy.load(tmp_path)
    optimizer = loaded.resume_training()
    before = crf_weights(loaded)
    for _ in range(3):
        loaded.update(examples, sgd=optimizer)
        optimizer.step_schedules()  # as spacy train does: warmup_linear starts at rate 0
    assert changed(before, crf_weights(loaded))


def test_pipeline_saved_with_old_config(tmp_path, caplog):
    """Pipelines saved from the configs before the fix (total_steps = ${training.max_steps})
    load with a warning that says what fails and how to fix it; the fix works."""
    nlp, examples = config_pipeline("bilstm_crf", None)  # type: ignore[arg-type]
    nlp.initialize(lambda: examples)
    nlp.to_disk(tmp_path)
    config_file = tmp_path / "config.cfg"
    text = config_file.read_text()
    assert "total_steps = 20000" in text
    config_file.write_text(
        text.replace("total_steps = 20000", "total_steps = ${training.max_steps}")
    )

    with caplog.at_level(logging.WARNING, logger="spacy_crf_ner"):
        loaded = spacy.load(tmp_path)
    assert "total_steps = ${training.max_steps}" in caplog.text
    assert "nlp.config = nlp.config.interpolate()" in caplog.text
    with pytest.raises(ConfigValidationError, match="total_steps"):
        loaded.update(examples)
    loaded.config = loaded.config.interpolate()
    loaded.update(examples)
    loaded.resume_training()


def test_spacy_train_with_sourced_component(tmp_path):
    """`spacy train` with [components.crf_ner] source = a trained pipeline starts from its
    weights and trains them further (in-process, as the CLI runs it)."""
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train

    blank = spacy.blank("en")
    data = EN_DATA + EN_ORG_DATA
    for split in ("train", "dev"):
        DocBin(docs=[eg.reference for eg in make_examples(blank, data)]).to_disk(
            tmp_path / f"{split}.spacy"
        )
    paths = {"paths.train": str(tmp_path / "train.spacy"), "paths.dev": str(tmp_path / "dev.spacy")}
    steps = {"training.max_steps": 6, "training.eval_frequency": 3}
    config = load_config(CONFIGS / "bilstm_crf.cfg", overrides={**SMALL_BILSTM, **paths, **steps})
    first = tmp_path / "first"
    first.mkdir()
    train(init_nlp(config), first, stdout=open(tmp_path / "log1", "w"))
    source = spacy.load(first / "model-last")

    sourced = load_config(CONFIGS / "bilstm_crf.cfg", overrides={**paths, **steps})
    sourced["components"]["crf_ner"] = {"source": str(first / "model-last")}
    nlp = init_nlp(sourced)
    assert crf_weights(nlp).keys() == crf_weights(source).keys()
    assert not changed(crf_weights(source), crf_weights(nlp))  # not re-initialized
    second = tmp_path / "second"
    second.mkdir()
    train(nlp, second, stdout=open(tmp_path / "log2", "w"))
    trained = spacy.load(second / "model-last")
    assert trained.get_pipe("crf_ner").labels == source.get_pipe("crf_ner").labels
    assert changed(crf_weights(source), crf_weights(trained))


# ------------------------------------------------------------------ growing the label set


def trained_pipeline(scheme: str = "BILUO", n_iter: int = 40) -> tuple[Language, list]:
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": SMALL_MODEL, "tag_scheme": scheme})
    examples = make_examples(nlp, EN_DATA)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer)
    return nlp, examples


@pytest.mark.parametrize("scheme", ["BILUO", "BIO", "IOB1", "BMEWO"])
def test_add_label_after_training_keeps_weights_and_predictions(scheme):
    nlp, examples = trained_pipeline(scheme)
    ner = nlp.get_pipe("crf_ner")
    ner.entity_probs = True
    texts = [text for text, _ in EN_DATA + EN_ORG_DATA]
    before = [(ents(doc), [e._.crf_prob for e in doc.ents]) for doc in nlp.pipe(texts)]
    old_tags = ner.tag_names
    W, b = (ner.model.get_ref("output_layer").get_param(p).copy() for p in ("W", "b"))
    crf_layer = ner.model.get_ref("crf")
    crf = {name: crf_layer.get_param(name).copy() for name in ("transitions", "start", "end")}

    assert ner.add_label("ORG") == 1
    assert ner.add_label("ORG") == 0
    assert ner.labels == ("LOC", "ORG", "PER")
    new_tags = ner.tag_names
    per_label = len(get_scheme(scheme).prefixes)
    assert len(new_tags) == len(old_tags) + per_label
    index = numpy.asarray([new_tags.index(tag) for tag in old_tags])
    added = [i for i, tag in enumerate(new_tags) if tag.endswith("-ORG")]
    output_layer, crf_layer = ner.model.get_ref("output_layer"), ner.model.get_ref("crf")
    assert crf_layer.attrs["crf_ner_labels"] == ["LOC", "ORG", "PER"]
    assert output_layer.get_param("W").shape == (len(new_tags), W.shape[1])
    assert_array_equal(output_layer.get_param("W")[index], W)
    assert_array_equal(output_layer.get_param("b")[index], b)
    assert not output_layer.get_param("W")[added].any()
    transitions = crf_layer.get_param("transitions")
    assert_array_equal(transitions[numpy.ix_(index, index)], crf["transitions"])
    assert_array_equal(crf_layer.get_param("start")[index], crf["start"])
    assert_array_equal(crf_layer.get_param("end")[index], crf["end"])
    # Same entities and the same probabilities: the new tags are out of play until trained.
    assert ner.untrained_labels == ("ORG",)
    after = [(ents(doc), [e._.crf_prob for e in doc.ents]) for doc in nlp.pipe(texts)]
    assert [e for e, _ in after] == [e for e, _ in before]
    for (_, p1), (_, p2) in zip(before, after, strict=True):
        numpy.testing.assert_allclose(p1, p2, rtol=1e-5)
    # Saved and loaded, it is still the same component.
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("crf_ner", config={"model": SMALL_MODEL, "tag_scheme": scheme})
    nlp2.from_bytes(nlp.to_bytes())
    assert nlp2.get_pipe("crf_ner").untrained_labels == ("ORG",)
    assert [ents(doc) for doc in nlp2.pipe(texts)] == [e for e, _ in before]

    # The next update with ORG in the gold trains it, with no "Unknown entity label".
    examples = make_examples(nlp, EN_DATA + EN_ORG_DATA)
    loss, _ = ner.get_loss(examples, ner.model.predict([eg.predicted for eg in examples]))
    assert numpy.isfinite(loss) and ner.untrained_labels == ("ORG",)
    optimizer = nlp.resume_training()
    for _ in range(30):
        losses = nlp.update(examples, sgd=optimizer)
    assert ner.untrained_labels == ()
    assert numpy.isfinite(losses["crf_ner"])
    assert {ent.label_ for doc in nlp.pipe(texts) for ent in doc.ents} == {"LOC", "ORG", "PER"}


def test_initialize_on_trained_component_takes_new_labels_and_warns(caplog):
    """Re-initializing (nlp.initialize) starts afresh, says so, and takes the new labels."""
    nlp, _ = trained_pipeline(n_iter=2)
    examples = make_examples(nlp, EN_DATA + EN_ORG_DATA)
    with caplog.at_level(logging.WARNING, logger="spacy_crf_ner"):
        optimizer = nlp.initialize(lambda: examples)
    assert "re-initializes its weights" in caplog.text and "resume_training" in caplog.text
    ner = nlp.get_pipe("crf_ner")
    assert ner.labels == ("LOC", "ORG", "PER") and ner.untrained_labels == ()
    losses = nlp.update(examples, sgd=optimizer)
    assert numpy.isfinite(losses["crf_ner"])


def test_unknown_label_in_fine_tuning_names_add_label():
    nlp, _ = trained_pipeline(n_iter=1)
    with pytest.raises(ValueError, match=r"Unknown entity label 'ORG'.*add_label\('ORG'\)"):
        nlp.update(make_examples(nlp, EN_ORG_DATA))


# ------------------------------------------------------------------ rehearsal


def test_rehearse_learns_the_old_predictions():
    nlp, examples = trained_pipeline(n_iter=15)
    ner = nlp.get_pipe("crf_ner")
    texts = [eg.reference.text for eg in examples]
    unlabelled = [Example(nlp.make_doc(text), nlp.make_doc(text)) for text in texts]
    before = crf_weights(nlp)
    assert nlp.rehearse(unlabelled, sgd=nlp.create_optimizer()) == {"crf_ner": 0.0}
    assert not changed(before, crf_weights(nlp))  # nothing to rehearse before resume_training

    optimizer = nlp.resume_training()
    predicted = [ents(doc) for doc in nlp.pipe(texts)]
    ner.add_label("ORG")  # the copy grows too, and never predicts ORG
    losses = [nlp.rehearse(unlabelled, sgd=optimizer)["crf_ner"] for _ in range(20)]
    assert changed(before, crf_weights(nlp))
    assert all(numpy.isfinite(losses)) and losses[-1] < losses[0]
    assert [ents(doc) for doc in nlp.pipe(texts)] == predicted


# ------------------------------------------------------------------ the sample: add ORG


def read_sample(path: Path, vocab, keep: set[str]) -> list[Example]:
    """The sample's BIO column file as examples with the entities of the labels in keep."""
    scheme = get_scheme("BIO")
    sentences: list[list[tuple[str, str]]] = [[]]
    for line in path.read_text(encoding="utf8").splitlines():
        if line.startswith("-DOCSTART-"):
            continue
        if line.strip():
            sentences[-1].append((line.split()[0], line.split()[-1]))
        elif sentences[-1]:
            sentences.append([])
    examples = []
    for sentence in filter(None, sentences):
        words = [word for word, _ in sentence]
        ref = Doc(vocab, words=words)
        spans = scheme.tags_to_spans([tag for _, tag in sentence], strict=False)
        ref.ents = [Span(ref, s, e, label=label) for s, e, label in spans if label in keep]
        examples.append(Example(Doc(vocab, words=words), ref))
    return examples


def micro_f1(nlp: Language, examples: list[Example], labels: set[str]) -> float:
    gold = {(i, s, e, lab) for i, eg in enumerate(examples)
            for s, e, lab in ents(eg.reference) if lab in labels}  # fmt: skip
    docs = nlp.pipe(Doc(nlp.vocab, words=[t.text for t in eg.reference]) for eg in examples)
    found = {(i, s, e, lab) for i, doc in enumerate(docs) for s, e, lab in ents(doc)
             if lab in labels}  # fmt: skip
    hits = len(gold & found)
    return 2 * hits / (len(gold) + len(found)) if gold or found else 1.0


@pytest.mark.slow
def test_sample_add_org_to_a_per_loc_model():
    """Train on PER/LOC, add ORG, fine-tune on ORG data mixed with a few old examples: ORG
    is learned and PER/LOC F1 on the held-out dev file drops by at most a few points; with
    rehearsal on old text it does not drop. (Figures: -s prints them.)"""
    fix_random_seed(0)
    rng = random.Random(0)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("crf_ner", config={"model": SMALL_MODEL})
    everything = {"PER", "LOC", "ORG"}
    train = read_sample(SAMPLE / "train.iob", nlp.vocab, everything)
    has_org = ["ORG" in {e.label_ for e in eg.reference.ents} for eg in train]
    old = [read_sample(SAMPLE / "train.iob", nlp.vocab, {"PER", "LOC"})[i]
           for i, org in enumerate(has_org) if not org]  # fmt: skip
    new = [eg for eg, org in zip(train, has_org, strict=True) if org]
    dev = read_sample(SAMPLE / "dev.iob", nlp.vocab, everything)
    unlabelled = [Example(eg.predicted, eg.predicted) for eg in old]

    def epochs(data: list[Example], n: int, optimizer, rehearse: bool = False) -> None:
        for _ in range(n):
            rng.shuffle(data)
            for start in range(0, len(data), 16):
                nlp.update(data[start : start + 16], sgd=optimizer, drop=0.1)
                if rehearse:
                    nlp.rehearse(rng.sample(unlabelled, 16), sgd=optimizer)

    epochs(old, 30, nlp.initialize(lambda: old))
    assert ner.labels == ("LOC", "PER")
    old_f1 = micro_f1(nlp, dev, {"PER", "LOC"})
    trained = nlp.to_bytes()
    texts = [Doc(nlp.vocab, words=[t.text for t in eg.reference]) for eg in dev + old]
    before = [ents(doc) for doc in nlp.pipe(texts)]
    for rehearse, max_drop in ((False, 0.05), (True, 0.02)):
        nlp = spacy.blank("en")
        ner = nlp.add_pipe("crf_ner", config={"model": SMALL_MODEL})
        nlp.from_bytes(trained)
        ner.add_label("ORG")
        assert [ents(doc) for doc in nlp.pipe(texts)] == before
        epochs(new + rng.sample(old, 20), 8, nlp.resume_training(), rehearse)
        org_f1 = micro_f1(nlp, dev, {"ORG"})
        new_f1 = micro_f1(nlp, dev, {"PER", "LOC"})
        print(f"rehearse={rehearse}: PER/LOC F1 {old_f1:.3f} -> {new_f1:.3f}; ORG {org_f1:.3f}")
        assert org_f1 >= 0.3
        assert new_f1 >= old_f1 - max_drop
