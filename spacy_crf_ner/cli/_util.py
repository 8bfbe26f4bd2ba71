"""What every command shares: the typer ``app``, the argument types, and one way to fail.

As in spaCy's ``spacy/cli/_util.py``: each command lives in its own module, imports ``app``
and the argument types from here and registers itself; ``cli/__init__.py`` imports every
command module, so ``app`` is complete however the package is imported. The loading helpers
are defined in ``spacy_crf_ner.loaders`` (the library uses them too, and must not import
typer) and re-exported here for the commands.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ..loaders import (  # noqa: F401  (re-exported for the commands)
    check_limit,
    check_output_file,
    load_docbin,
    load_pipeline,
    read_texts,
    require_crf_component,
    setup_gpu,
)

NAME = "spacy-crf-ner"
COMMAND = "python -m spacy_crf_ner"
HELP = (
    "Corpus conversion, evaluation and confidence tools for the crf_ner component. "
    f"Run as {NAME} or {COMMAND}; add --help after a command for its options."
)

app = typer.Typer(
    name=NAME,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)

USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError)
"""What the library raises for a user's mistake (a path, a setting, a missing extra); each
message names the thing, so the CLI prints it as one line instead of a traceback."""

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="Trained pipeline: a directory (e.g. training/model-best) or an installed package.",
        show_default=False,
    ),
]
GoldDataArg = Annotated[
    Path,
    typer.Argument(
        metavar="DATA",
        help="Gold docs: a .spacy DocBin or a directory of them.",
        show_default=False,
    ),
]
GpuIdOpt = Annotated[
    int, typer.Option("--gpu-id", "-g", help="GPU to run the model on; -1 for the CPU.")
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size", "-b", help="Docs per batch (default: the pipeline's).", show_default=False
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", "-n", help="Only the first N inputs (at least 1).", show_default=False),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace output files that exist already.")
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-V", help="On an error, also print the traceback (for bug reports)."
    ),
]


def fail(message: str, *, verbose: bool = False) -> NoReturn:
    """The one way a command fails: the message on stderr and exit code 1. The traceback of
    the exception being handled is printed only with ``--verbose``."""
    if verbose and sys.exc_info()[0] is not None:
        traceback.print_exc()
    typer.echo(f"✘ {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def user_errors(verbose: bool = False) -> Iterator[None]:
    """Turn the library's user errors (``USER_ERRORS``) into ``fail``; others propagate."""
    try:
        yield
    except USER_ERRORS as err:
        fail(str(err), verbose=verbose)
