"""The mention-replacement augmenter: copies keep labels, boundaries, missing annotation and
sentence starts; the pool is the training corpus's; it is reachable from a config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry
from thinc.api import Config

from spacy_crf_ner.augment import collect_mentions, replace_mentions

NAME = "spacy_crf_ner.mention_replacement.v1"


@pytest.fixture
def nlp() -> spacy.Language:
    return spacy.blank("en")


@pytest.fixture
def docs(nlp: spacy.Language) -> list[Doc]:
    v = nlp.vocab
    return [
        Doc(v, words="John Smith lives in New York .".split(),
            ents=["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]),
        Doc(v, words="Mary met Bob in Paris".split(), ents=["B-PER", "O", "B-PER", "O", "B-LOC"],
            sent_starts=[True, False, False, True, False]),
        Doc(v, words="Anna is in Rome".split(), ents=["B-PER", None, "O", "B-LOC"]),
    ]  # fmt: skip


@pytest.fixture
def train_path(tmp_path: Path, docs: list[Doc]) -> Path:
    path = tmp_path / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


def _augmenter(path: Path, level: float, rate: float):
    return registry.augmenters.get(NAME)(path, level=level, rate=rate)


def _tags(doc: Doc) -> list[str]:
    return [t.ent_iob_ + ("-" + t.ent_type_ if t.ent_type_ else "") for t in doc]


def _between(doc: Doc) -> list:
    """The stretches of tokens before, between and after the entity mentions."""
    edges = [0] + [i for ent in doc.ents for i in (ent.start, ent.end)] + [len(doc)]
    return [doc[edges[i] : edges[i + 1]] for i in range(0, len(edges), 2)]


def test_pool_has_each_labels_distinct_mentions(docs: list[Doc]) -> None:
    pool = collect_mentions(docs + docs)
    assert pool["PER"] == [(("John", "Smith"), (" ",)), (("Mary",), ()), (("Bob",), ()),
                           (("Anna",), ())]  # fmt: skip
    assert [m[0] for m in pool["LOC"]] == [("New", "York"), ("Paris",), ("Rome",)]


def test_replaced_mentions_keep_label_and_the_rest_of_the_doc(docs: list[Doc]) -> None:
    pool = collect_mentions(docs)
    random.seed(1)
    for doc in docs:
        for _ in range(20):
            new = replace_mentions(doc, pool, rate=1.0)
            assert new is not None
            assert [e.label_ for e in new.ents] == [e.label_ for e in doc.ents]
            old_ents, new_ents = list(doc.ents), list(new.ents)
            # Tokens between mentions, their tags, whitespace and sentence starts are kept.
            for old_part, new_part in zip(_between(doc), _between(new), strict=True):
                assert [t.text_with_ws for t in old_part] == [t.text_with_ws for t in new_part]
                assert _tags(old_part) == _tags(new_part)
                assert [t.is_sent_start for t in old_part] == [t.is_sent_start for t in new_part]
            for old, ent in zip(old_ents, new_ents, strict=True):
                assert (tuple(t.text for t in ent), tuple(t.whitespace_ for t in ent[:-1])) in (
                    pool[ent.label_]
                )
                assert ent[-1].whitespace_ == old[-1].whitespace_
                assert ent[0].is_sent_start == old[0].is_sent_start
            assert new.has_annotation("SENT_START") == doc.has_annotation("SENT_START")


def test_missing_annotation_stays_missing(docs: list[Doc]) -> None:
    random.seed(0)
    new = replace_mentions(docs[2], collect_mentions(docs), rate=1.0)
    assert new is not None
    missing = [t.text for t in new if t.ent_iob_ == ""]
    assert missing == ["is"]


def test_nothing_to_replace_with_gives_no_copy(nlp: spacy.Language) -> None:
    doc = Doc(nlp.vocab, words=["Paris", "!"], ents=["B-LOC", "O"])
    assert replace_mentions(doc, collect_mentions([doc]), rate=1.0) is None
    assert replace_mentions(doc, {}, rate=1.0) is None


def test_augmenter_yields_the_original_then_a_copy(
    nlp: spacy.Language, docs: list[Doc], train_path: Path
) -> None:
    example = Example(nlp.make_doc(docs[0].text), docs[0])
    random.seed(3)
    out = list(_augmenter(train_path, level=1.0, rate=1.0)(nlp, example))
    assert out[0] is example
    assert len(out) == 2
    copy = out[1]
    assert copy.reference.text != example.reference.text
    assert copy.predicted.text == copy.reference.text
    assert not copy.predicted.ents  # the predicted side carries no gold
    assert list(_augmenter(train_path, level=0.0, rate=1.0)(nlp, example)) == [example]
    assert list(_augmenter(train_path, level=1.0, rate=0.0)(nlp, example)) == [example]


def test_augmenter_is_seeded_by_random(
    nlp: spacy.Language, docs: list[Doc], train_path: Path
) -> None:
    augment = _augmenter(train_path, level=0.5, rate=0.5)
    examples = [Example(nlp.make_doc(d.text), d) for d in docs] * 5

    def texts(seed: int) -> list[str]:
        random.seed(seed)
        return [eg.reference.text for e in examples for eg in augment(nlp, e)]

    assert texts(7) == texts(7)
    assert len(texts(7)) > len(examples)


def test_predicted_keeps_reference_tokens_when_the_corpus_did(
    nlp: spacy.Language, train_path: Path
) -> None:
    # "New York-based" is tokenized differently by the tokenizer than in the reference.
    words, ents = ["Bob", "flew", "to", "New", "York-based", "firms"], ["B-PER"] + ["O"] * 5
    reference = Doc(nlp.vocab, words=words, ents=ents)
    gold = Doc(nlp.vocab, words=words)
    random.seed(0)
    out = list(_augmenter(train_path, level=1.0, rate=1.0)(nlp, Example(gold, reference)))
    assert [t.text for t in out[1].predicted] == [t.text for t in out[1].reference]
    assert "York-based" in [t.text for t in out[1].predicted]


def test_bad_settings_and_paths_are_named(tmp_path: Path, nlp: spacy.Language) -> None:
    with pytest.raises(ValueError, match="paths.train"):
        _augmenter(None, level=0.5, rate=0.5)
    with pytest.raises(ValueError, match="level must be between 0 and 1, got 1.5"):
        _augmenter(tmp_path, level=1.5, rate=0.5)
    with pytest.raises(ValueError, match="rate must be between 0 and 1, got -0.1"):
        _augmenter(tmp_path, level=0.5, rate=-0.1)
    augment = _augmenter(tmp_path / "nope.spacy", level=1.0, rate=1.0)
    doc = Doc(nlp.vocab, words=["Paris"], ents=["B-LOC"])
    with pytest.raises(FileNotFoundError, match="nope.spacy"):
        list(augment(nlp, Example(nlp.make_doc("Paris"), doc)))


def test_corpus_from_a_config_yields_the_copies(nlp: spacy.Language, train_path: Path) -> None:
    config = Config().from_str(
        f"""
        [corpus]
        @readers = "spacy.Corpus.v1"
        path = "{train_path}"
        gold_preproc = false

        [corpus.augmenter]
        @augmenters = "{NAME}"
        path = "{train_path}"
        level = 1.0
        rate = 1.0
        """
    )
    corpus = registry.resolve(config)["corpus"]
    random.seed(0)
    examples = list(corpus(nlp))
    assert len(examples) == 6
    assert [e.reference.text for e in examples[::2]] == [
        d.text for d in DocBin().from_disk(train_path).get_docs(nlp.vocab)
    ]
    for original, copy in zip(examples[::2], examples[1::2], strict=True):
        assert [e.label_ for e in original.reference.ents] == [
            e.label_ for e in copy.reference.ents
        ]
