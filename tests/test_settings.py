"""Every setting of ``crf_ner`` is checked when the component is made, and the error names
it (issue 10, point 7)."""

from __future__ import annotations

import math

import pytest
import spacy
from thinc.api import Linear

from spacy_crf_ner.pipe import CRFEntityRecognizer
from spacy_crf_ner.registrations import DEFAULT_MODEL

# Values that pass spaCy's own config validation (types) but make no sense.
CONFIG_ERRORS = [
    ("max_candidate_length", 0, "whole number of tokens >= 1"),
    ("max_candidate_length", -3, "whole number of tokens >= 1"),
    ("candidate_threshold", 0.0, r"in \(0, 1\] or null"),
    ("candidate_threshold", 1.5, r"in \(0, 1\] or null"),
    ("temperature", 0.0, "a positive number"),
    ("temperature", -1.0, "a positive number"),
    ("spans_key", "", "a non-empty string"),
    ("recall_cost", -0.5, "a number >= 0"),
    ("tag_scheme", "XYZ", "Unknown tag scheme 'XYZ'"),
]


@pytest.mark.parametrize("setting,value,expected", CONFIG_ERRORS)
def test_bad_setting_in_config(setting, value, expected):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=f"{setting}.*component 'my_ner'.*{expected}"):
        nlp.add_pipe("crf_ner", name="my_ner", config={setting: value})


# Values of the wrong type, as Python code could pass them to the class directly.
TYPE_ERRORS = [
    ("constrained", "yes", "true or false"),
    ("respect_sentences", 1, "true or false"),
    ("entity_probs", None, "true or false"),
    ("max_candidate_length", 2.5, "a whole number"),
    ("max_candidate_length", True, "a whole number"),
    ("candidate_threshold", "0.5", r"in \(0, 1\]"),
    ("temperature", math.nan, "a positive number"),
    ("temperature", math.inf, "a positive number"),
    ("temperature", True, "a positive number"),
    ("spans_key", 3, "a non-empty string"),
    ("recall_cost", math.inf, "a number >= 0"),
    ("recall_cost", "1", "a number >= 0"),
    ("scorer", "spacy_crf_ner.entity_scorer.v1", "a function or null"),
]


@pytest.mark.parametrize("setting,value,expected", TYPE_ERRORS)
def test_bad_setting_type(setting, value, expected):
    nlp = spacy.blank("en")
    model = spacy.util.registry.resolve({"model": DEFAULT_MODEL})["model"]
    with pytest.raises(ValueError, match=f"{setting} of component 'my_ner' must be {expected}"):
        CRFEntityRecognizer(nlp.vocab, model, "my_ner", **{setting: value})


def test_model_without_a_crf_layer():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="model of component 'my_ner' must be a Thinc model"):
        CRFEntityRecognizer(nlp.vocab, Linear(3, 3), "my_ner")


def test_good_settings_are_kept():
    nlp = spacy.blank("en")
    config = {
        "max_candidate_length": 1,
        "candidate_threshold": 1.0,
        "temperature": 2,
        "constrained": False,
        "spans_key": "k",
        "tag_scheme": "bioes",
        "recall_cost": 1,
    }
    ner = nlp.add_pipe("crf_ner", config=config)
    assert (ner.max_candidate_length, ner.candidate_threshold, ner.temperature) == (1, 1.0, 2.0)
    assert (ner.constrained, ner.spans_key, ner.scheme.name) == (False, "k", "BIOES")
    assert ner.recall_cost == 1.0
