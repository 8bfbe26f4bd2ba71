"""Every tag scheme through the component: train, decode, save and load.

The tag-level conversions are tested in test_tags.py; here the component trains in each
scheme, writes the scheme's tags (checked against tags written by hand) and keeps the scheme
when saved.
"""

from __future__ import annotations

import pytest
import spacy
from spacy.lang.en import English
from spacy.training import Example
from spacy.util import fix_random_seed

from spacy_crf_ner.tags import SCHEME_NAMES

pytestmark = pytest.mark.slow  # six models trained (about 1.5 s each)

# Two adjacent one-token entities of one type (IOB1 writes the second as B-) and a
# three-token one: "Yesterday | Paris | London | and | New York City".
ADJACENT = (
    "Yesterday Paris London and New York City",
    [(10, 15, "LOC"), (16, 22, "LOC"), (27, 40, "LOC")],
)

# The tags of ADJACENT in each scheme, written by hand.
ADJACENT_TAGS = {
    "IOB1": ["O", "I-LOC", "B-LOC", "O", "I-LOC", "I-LOC", "I-LOC"],
    "BIO": ["O", "B-LOC", "B-LOC", "O", "B-LOC", "I-LOC", "I-LOC"],
    "BILUO": ["O", "U-LOC", "U-LOC", "O", "B-LOC", "I-LOC", "L-LOC"],
    "BIOES": ["O", "S-LOC", "S-LOC", "O", "B-LOC", "I-LOC", "E-LOC"],
    "BMES": ["O", "S-LOC", "S-LOC", "O", "B-LOC", "M-LOC", "E-LOC"],
    "BMEWO": ["O", "W-LOC", "W-LOC", "O", "B-LOC", "M-LOC", "E-LOC"],
}


def entities(doc) -> list[tuple[int, int, str]]:
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def test_every_scheme_is_covered():
    assert sorted(ADJACENT_TAGS) == sorted(SCHEME_NAMES)


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_scheme_trains_decodes_and_round_trips(scheme, small_model, en_train_data, tmp_path):
    fix_random_seed(0)
    nlp = English()
    ner = nlp.add_pipe("crf_ner", config={"model": small_model, "tag_scheme": scheme.lower()})
    assert ner.cfg["tag_scheme"] == scheme
    data = [*en_train_data, ADJACENT]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    assert len(ner.tag_names) == 1 + (2 if scheme in ("IOB1", "BIO") else 4) * 3
    for _ in range(40):
        nlp.update(examples, sgd=optimizer)
    gold = [entities(eg.reference) for eg in examples]
    assert [entities(doc) for doc in nlp.pipe(t for t, _ in data)] == gold
    # The decoded tags are the scheme's, as written by hand.
    (ids,) = ner.predict([nlp.make_doc(ADJACENT[0])])
    assert [ner.tag_names[i] for i in ids] == ADJACENT_TAGS[scheme]
    # Saved and loaded: the scheme, the tags and the predictions stay.
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    assert loaded.get_pipe("crf_ner").cfg["tag_scheme"] == scheme
    assert loaded.get_pipe("crf_ner").tag_names == ner.tag_names
    assert [entities(doc) for doc in loaded.pipe(t for t, _ in data)] == gold
    # A pipeline whose config says another scheme still loads the saved one: the model's
    # tag indices belong to it.
    other = "BIO" if scheme != "BIO" else "BILUO"
    overridden = spacy.load(tmp_path, config={"components": {"crf_ner": {"tag_scheme": other}}})
    assert overridden.get_pipe("crf_ner").cfg["tag_scheme"] == scheme
    assert [entities(doc) for doc in overridden.pipe(t for t, _ in data)] == gold
