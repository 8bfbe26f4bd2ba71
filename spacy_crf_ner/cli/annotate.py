"""``annotate``: run a pipeline over a corpus into resumable shards (local or Ray)."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Annotated

import typer
from wasabi import msg

from ..annotate import ENGINES, OUTPUT_FORMATS, Settings, annotate
from ._util import BatchSizeOpt, GpuIdOpt, ModelArg, VerboseOpt, app, fail, user_errors


@app.command("annotate")
def annotate_cli(
    model: ModelArg,
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...",
            help=".txt (one doc per line), .jsonl ('text', optional 'id'), .spacy; also .gz, "
            "globs and directories.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the shards and manifest.json.")
    ],
    engine: Annotated[
        str, typer.Option("--engine", help=f"{' or '.join(ENGINES)}: processes or Ray Data.")
    ] = "local",
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Worker processes or Ray actors.")
    ] = 1,
    batch_size: BatchSizeOpt = None,
    gpu_id: GpuIdOpt = -1,
    gpus_per_worker: Annotated[
        float, typer.Option("--gpus-per-worker", help="GPUs per Ray actor (--engine ray).")
    ] = 0.0,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help=f"{' or '.join(OUTPUT_FORMATS)}: JSON lines or DocBin shards."
        ),
    ] = "jsonl",
    entity_probs: Annotated[
        bool, typer.Option("--entity-probs", help="Add each entity's probability ('prob').")
    ] = False,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Input positions (lines, docs) per shard.")
    ] = 10_000,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Discard an earlier run in --output whose inputs changed."),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to join (default: a local Ray runtime).",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar.")
    ] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Annotate a corpus into numbered shards; rerun the same command to resume."""
    settings = Settings(
        engine=engine,
        workers=workers,
        batch_size=batch_size,
        gpu_id=gpu_id,
        gpus_per_worker=gpus_per_worker,
        fmt=fmt,
        entity_probs=entity_probs,
        shard_size=shard_size,
        restart=restart,
        ray_address=ray_address,
        progress=progress,
    )
    with user_errors(verbose):
        try:
            summary = annotate(model, inputs, output, settings)
        except BrokenProcessPool as err:
            fail(
                f"A worker process died ({err}); the shards written so far are kept: rerun "
                "the same command to resume",
                verbose=verbose,
            )
        except Exception as err:
            if engine != "ray" or not _is_ray_error(err):
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            fail(
                f"Ray stopped the run ({type(err).__name__}: {reason}); the shards written so "
                "far are kept: rerun the same command to resume",
                verbose=verbose,
            )
    skipped = f", {summary.shards_skipped} done before" if summary.shards_skipped else ""
    msg.good(
        f"{summary.docs} docs in {summary.shards} shards under {output}{skipped}; "
        f"{summary.docs_this_run} this run in {summary.seconds:.1f} s "
        f"({summary.docs_per_second:.0f} docs/s)"
    )
    if summary.entities:
        msg.text("Entities: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.entities.items())))
    if summary.errors:
        msg.warn(f"{summary.errors} bad records: see {output / 'errors.jsonl'}")


def _is_ray_error(err: BaseException) -> bool:
    """A failure reported by Ray (a task or actor that could not be run or retried)."""
    try:
        from ray.exceptions import RayError
    except ImportError:
        return False
    return isinstance(err, RayError)
