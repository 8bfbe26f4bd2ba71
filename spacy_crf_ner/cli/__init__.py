"""Command line: ``spacy-crf-ner <command>`` or ``python -m spacy_crf_ner <command>``.

Every command module is imported here, so ``app`` lists every command however this package
is imported (``from spacy_crf_ner.cli import app`` included). The commands are thin typer
wrappers; the work is done by library functions outside this package.
"""

from __future__ import annotations

from ._util import COMMAND, NAME, app
from .annotate import annotate_cli
from .calibrate import calibrate_cli
from .convert import convert_cli
from .evaluate import evaluate_cli
from .export import export_cli
from .predict import predict_cli
from .rank import rank_cli
from .render import render_cli
from .train import train_cli

__all__ = [
    "app",
    "main",
    "annotate_cli",
    "calibrate_cli",
    "convert_cli",
    "evaluate_cli",
    "export_cli",
    "predict_cli",
    "rank_cli",
    "render_cli",
    "train_cli",
]


def main(prog_name: str = NAME) -> None:
    """Run the command line (the ``spacy-crf-ner`` console script)."""
    app(prog_name=prog_name)


def module_main() -> None:
    """Run the command line as ``python -m spacy_crf_ner``."""
    main(prog_name=COMMAND)
