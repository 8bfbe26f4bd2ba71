"""spacy-crf-ner: a linear-chain CRF named-entity recogniser for spaCy.

Importing the package is cheap: spaCy finds the ``crf_ner`` factory and the architectures
through entry points, and the classes below are imported on first access.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "CRFEntityRecognizer": "spacy_crf_ner.pipe",
    "build_crf_tagger": "spacy_crf_ner.architectures",
    "build_bilstm_encoder": "spacy_crf_ner.architectures",
    "make_crf_ner": "spacy_crf_ner.registrations",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import the public classes and functions on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spacy_crf_ner' has no attribute {name!r}")
