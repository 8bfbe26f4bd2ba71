"""The entity scorer of ``crf_ner``, in a module of its own.

Both the factory module (``registrations``) and the component (``pipe``) need it; neither
imports the other for it. Light: no torch.
"""

from collections.abc import Callable, Iterable
from typing import Any

from spacy.scorer import get_ner_prf
from spacy.training import Example
from spacy.util import registry


def entity_score(examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
    """Entity P/R/F as spaCy's ``ner`` reports it (``ents_p``, ``ents_r``, ``ents_f``,
    ``ents_per_type``), so configs and ``spacy evaluate`` treat both the same way."""
    return get_ner_prf(examples, **kwargs)


@registry.scorers("spacy_crf_ner.entity_scorer.v1")
def make_entity_scorer() -> Callable[..., dict[str, Any]]:
    """The default scorer of ``crf_ner``."""
    return entity_score
