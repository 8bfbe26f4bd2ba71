"""Loading a ``crf_ner`` component is checked and all-or-nothing (issue 10, point 6), and
warns about settings that don't fit how it was trained (point 7)."""

from __future__ import annotations

import logging

import numpy
import pytest
import spacy
import srsly
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed

from spacy_crf_ner.pipe import LABELS_ATTR, SCHEME_ATTR

DATA = [
    ("Who is Shaka Khan?", [(7, 17, "PER")]),
    ("I like London and Berlin.", [(7, 13, "LOC"), (18, 24, "LOC")]),
    ("Angela Merkel visited New York City.", [(0, 13, "PER"), (22, 35, "LOC")]),
    ("Apple bought a small startup in Paris.", [(0, 5, "ORG"), (32, 37, "LOC")]),
]
TEXTS = [text for text, _ in DATA] + ["Shaka Khan flew to Berlin."]

SMALL_MODEL = {
    "@architectures": "spacy_crf_ner.CRFTagger.v1",
    "tok2vec": {
        "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
        "width": 16,
        "embed_size": 300,
        "char_features": 4,
        "lstm_width": 16,
    },
}


def blank(**config) -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config={"model": SMALL_MODEL, **config})
    return nlp


def trained(data=DATA, seed: int = 0, n_iter: int = 30) -> Language:
    fix_random_seed(seed)
    nlp = blank()
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer)
    return nlp


@pytest.fixture(scope="module")
def pipeline() -> Language:
    return trained()


def ents(doc: Doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def state(nlp: Language) -> tuple:
    """Everything a load could change: predictions, cfg, weights (and their bytes)."""
    ner = nlp.get_pipe("crf_ner")
    emissions = ner.model.predict([nlp.make_doc(text) for text in TEXTS])
    return (
        [ents(doc) for doc in nlp.pipe(TEXTS)],
        dict(ner.cfg),
        [numpy.array(e).tolist() for e in emissions],
        ner.model.to_bytes(),
    )


def component_msg(nlp: Language) -> dict:
    return srsly.msgpack_loads(nlp.get_pipe("crf_ner").to_bytes())


def test_rejected_cfg_leaves_the_component_as_it_was(pipeline):
    """A cfg with 3 labels for a model of 2 used to update the cfg before the model was
    refused, and the next nlp(text) failed inside the CRF."""
    other = trained(DATA[:3])  # PER and LOC only
    target = trained(DATA[:3], seed=1)
    before = state(target)
    msg = component_msg(other)
    msg["cfg"] = srsly.json_dumps({**srsly.json_loads(msg["cfg"]), "labels": ["LOC", "ORG", "PER"]})
    with pytest.raises(ValueError, match="model and cfg files do not belong together"):
        target.get_pipe("crf_ner").from_bytes(srsly.msgpack_dumps(msg))
    assert state(target) == before


def test_model_failing_half_way_is_rolled_back():
    """Weights that pass the checks but fail to load part-way (the LSTM's, after the
    embeddings were already replaced) leave the old weights in place."""
    other = trained(seed=3, n_iter=2)
    target = trained(seed=4, n_iter=2)
    before = state(target)
    msg = component_msg(other)
    model = srsly.msgpack_loads(msg["model"])
    lstm = next(i for i, shims in enumerate(model["shims"]) if shims)
    model["shims"][lstm] = [b"garbage"]
    msg["model"] = srsly.msgpack_dumps(model)
    with pytest.raises(ValueError, match="Could not load component 'crf_ner' from bytes"):
        target.get_pipe("crf_ner").from_bytes(srsly.msgpack_dumps(msg))
    assert state(target) == before
    # The intact data loads, all of it.
    target.get_pipe("crf_ner").from_bytes(other.get_pipe("crf_ner").to_bytes())
    assert state(target) == state(other)


def test_model_of_another_size_is_refused_before_anything_changes(pipeline):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    wider = {**SMALL_MODEL, "tok2vec": {**SMALL_MODEL["tok2vec"], "lstm_width": 24}}
    ner = nlp.add_pipe("crf_ner", config={"model": wider})
    ner.initialize(lambda: [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in DATA])
    before = state(nlp)
    with pytest.raises(ValueError, match="does not fit.*nO = 32, the configured model 48"):
        ner.from_bytes(pipeline.get_pipe("crf_ner").to_bytes())
    assert state(nlp) == before


def test_labels_are_saved_with_the_weights(pipeline, tmp_path):
    pipeline.to_disk(tmp_path)
    model = srsly.msgpack_loads((tmp_path / "crf_ner" / "model").read_bytes())
    crf = model["nodes"][0]["refs"]["crf"]
    assert srsly.msgpack_loads(model["attrs"][crf][LABELS_ATTR]) == ["LOC", "ORG", "PER"]
    assert srsly.msgpack_loads(model["attrs"][crf][SCHEME_ATTR]) == "BILUO"


def test_renamed_label_in_cfg_is_refused(pipeline, tmp_path):
    """Same number of labels, so the sizes agree: it used to load with shifted labels."""
    pipeline.to_disk(tmp_path)
    cfg_file = tmp_path / "crf_ner" / "cfg"
    cfg = srsly.read_json(cfg_file)
    cfg["labels"] = ["GPE", "ORG", "PER"]
    srsly.write_json(cfg_file, cfg)
    with pytest.raises(
        ValueError,
        match=r"labels \['GPE', 'ORG', 'PER'\].*trained for the labels \['LOC', 'ORG', 'PER'\]",
    ):
        spacy.load(tmp_path)
    cfg["labels"], cfg["tag_scheme"] = ["LOC", "ORG", "PER"], "BIOES"  # 13 tags too
    srsly.write_json(cfg_file, cfg)
    with pytest.raises(ValueError, match=r"\(BIOES\), but its model .* \(BILUO\)"):
        spacy.load(tmp_path)


def test_missing_files_are_named(pipeline, tmp_path):
    pipeline.to_disk(tmp_path)
    (tmp_path / "crf_ner" / "cfg").unlink()
    with pytest.raises(ValueError, match=r"the file '.*crf_ner[/\\]cfg' is missing.*labels"):
        spacy.load(tmp_path)
    pipeline.to_disk(tmp_path)
    (tmp_path / "crf_ner" / "model").unlink()
    with pytest.raises(ValueError, match=r"the file '.*crf_ner[/\\]model' is missing.*weights"):
        spacy.load(tmp_path)


def test_pipelines_saved_without_labels_in_the_model_still_load(pipeline, tmp_path):
    """Pipelines saved before the labels were stored with the weights."""
    pipeline.to_disk(tmp_path)
    model_file = tmp_path / "crf_ner" / "model"
    model = srsly.msgpack_loads(model_file.read_bytes())
    crf = model["nodes"][0]["refs"]["crf"]
    del model["attrs"][crf][LABELS_ATTR], model["attrs"][crf][SCHEME_ATTR]
    model_file.write_bytes(srsly.msgpack_dumps(model))
    cfg_file = tmp_path / "crf_ner" / "cfg"
    srsly.write_json(cfg_file, {"labels": ["LOC", "ORG", "PER"], "tag_scheme": "BILUO"})
    loaded = spacy.load(tmp_path)
    assert [ents(doc) for doc in loaded.pipe(TEXTS)] == [ents(doc) for doc in pipeline.pipe(TEXTS)]
    assert loaded.get_pipe("crf_ner").model.get_ref("crf").attrs[LABELS_ATTR] == [
        "LOC",
        "ORG",
        "PER",
    ]


def test_unconstrained_load_of_a_constrained_model_warns(pipeline, tmp_path, caplog):
    pipeline.to_disk(tmp_path)
    with caplog.at_level(logging.WARNING, logger="spacy_crf_ner"):
        spacy.load(tmp_path)
    assert "constrained" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="spacy_crf_ner"):
        spacy.load(tmp_path, config={"components": {"crf_ner": {"constrained": False}}})
    assert "trained with constrained = true but is loaded with constrained = false" in (caplog.text)
