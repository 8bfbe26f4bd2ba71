"""``convert``: column files and annotation-tool exports to ``.spacy`` DocBins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..convert import DEFAULT_N_SENTS, INPUT_FORMATS, ConversionError, convert_files, print_report
from ..tags import get_scheme
from ._util import OverwriteOpt, VerboseOpt, app, fail, user_errors

HELP = (
    "Convert NER corpora to .spacy DocBins, one <input file name>.spacy per input: column "
    "files (CoNLL-2003, Resume NER, Weibo NER) and annotation-tool exports (Prodigy and "
    "doccano .jsonl, Label Studio .json).\n\n"
    "Column files: token in the first column, tag in the last, columns split at spaces or "
    "tabs (tokens cannot contain spaces). A line whose first column is -DOCSTART- starts a "
    "document; blank or whitespace-only lines end a sentence. A '-' tag means the token's "
    "annotation is missing (it is not O); lowercase tags are read with an upper-case prefix. "
    "Invalid tag sequences are repaired as conlleval does and listed as file:line (--strict "
    "fails instead); a wrong number of columns, a tag like B-O, or an entity that runs into "
    "a '-' token is always an error.\n\n"
    "Nothing is written unless every input converts and every output can be written; "
    "existing outputs are refused unless --overwrite."
)


@app.command("convert", help=HELP)
def convert_cli(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Column files (token first, tag last) or Prodigy/doccano .jsonl, "
            "Label Studio .json exports.",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", "-o", help="Directory for <input file name>.spacy outputs."),
    ],
    lang: Annotated[
        str,
        typer.Option("--lang", "-l", help="spaCy language; zh/ja/th docs have no spaces."),
    ] = "en",
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help=f"{', '.join(INPUT_FORMATS)}. auto: .json is Label Studio, .jsonl Prodigy "
            "(with 'spans') or doccano (with 'label'/'entities'), anything else column.",
        ),
    ] = "auto",
    scheme: Annotated[
        str | None,
        typer.Option(
            "--scheme",
            "-s",
            help="IOB1, IOB2/BIO, BIOES/IOBES, BILUO/BILOU, BMES or BMEWO (default: detected).",
            show_default=False,
        ),
    ] = None,
    n_sents: Annotated[
        int | None,
        typer.Option(
            "--n-sents",
            "-n",
            help="Sentences per Doc, never across -DOCSTART-; 0 = one Doc per document "
            f"(default: one Doc per -DOCSTART- document, {DEFAULT_N_SENTS} without them).",
            show_default=False,
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail on invalid tag sequences instead of repairing them."),
    ] = False,
    strip_digit: Annotated[
        bool,
        typer.Option(
            "--strip-digit",
            help="Remove the trailing position number of each token (Weibo NER: 科0 -> 科).",
        ),
    ] = False,
    stats_json: Annotated[
        Path | None,
        typer.Option("--stats-json", help="Also write the counts as JSON to this file."),
    ] = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The ``convert`` command: ``convert_files`` plus a report (help text in HELP)."""
    with user_errors(verbose):
        scheme_obj = None if scheme is None else get_scheme(scheme)
        if n_sents is not None and n_sents < 0:
            raise ValueError(f"--n-sents must be 0 or more, got {n_sents}")
    try:
        results = convert_files(
            inputs,
            output_dir,
            lang=lang,
            scheme=scheme_obj,
            n_sents=n_sents,
            strict=strict,
            strip_digit=strip_digit,
            stats_json=stats_json,
            overwrite=overwrite,
            fmt=fmt,
        )
    except ConversionError as err:
        fail(f"Conversion failed, nothing was written: {err}", verbose=verbose)
    except (OSError, ValueError) as err:
        fail(f"Conversion failed: {err}", verbose=verbose)
    print_report(results)
    if stats_json is not None:
        msg.info(f"Counts written to {stats_json}")
