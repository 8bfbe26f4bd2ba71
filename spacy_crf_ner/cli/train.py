"""``train``: spaCy's training loop on several processes or GPUs (torch.distributed)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from spacy.cli._util import import_code, parse_config_overrides, show_validation_error
from spacy.util import load_config
from wasabi import msg

from ..distributed import (
    DEFAULT_TIMEOUT,
    DistributedTrainingError,
    exit_after_failure,
    launch_workers,
    train_worker,
    worker_env,
)
from ._util import USER_ERRORS, VerboseOpt, app, fail


def check_corpus_paths(config_path: Path, overrides: dict) -> None:
    """Read the config before any worker starts or joins the others, so that a bad override or
    a missing corpus file is one error at once, not a worker that the others wait for until
    their timeout."""
    with show_validation_error(config_path, hint_fill=False):
        config = load_config(config_path, overrides=overrides, interpolate=False)
    for key in ("train", "dev"):
        value = config.get("paths", {}).get(key)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value)
        if not path.exists():
            raise FileNotFoundError(f"--paths.{key}: no such file or directory: {value}")
        # spaCy's corpus reader skips anything but .spacy files with a warning, and training
        # then fails far from the cause (no labels, or an empty dev set).
        has_spacy = path.suffix == ".spacy" or next(path.glob("**/*.spacy"), None) is not None
        if not has_spacy:
            source = "TRAIN.iob" if path.is_dir() else value
            raise ValueError(
                f"--paths.{key}: {value} is not a .spacy (DocBin) file"
                + (" nor a directory with any" if path.is_dir() else "")
                + f"; convert it first: python -m spacy_crf_ner convert {source} --output-dir "
                "corpus"
            )


def parse_gpu_ids(value: str | None) -> list[int]:
    """``--gpu-ids 0,1,2`` -> [0, 1, 2]; empty or None -> the CPU."""
    if not value:
        return []
    try:
        ids = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--gpu-ids must be GPU numbers separated by commas, got {value!r}"
        ) from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpu-ids must be distinct GPU numbers (0, 1, ...), got {value!r}")
    return ids


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_cli(
    ctx: typer.Context,
    config_path: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG", help="Training config (as for spacy train).", show_default=False
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Directory for model-best and model-last."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", "-w", help="Worker processes (ignored under torchrun, which sets them)."
        ),
    ] = 1,
    gpu_ids: Annotated[
        str | None,
        typer.Option(
            "--gpu-ids",
            help="One GPU per worker, e.g. 0,1 (NCCL); none: the CPU (gloo, 1 thread each).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds a worker waits for the others (longer than an evaluation + save).",
        ),
    ] = DEFAULT_TIMEOUT,
    code: Annotated[
        Path | None,
        typer.Option(
            "--code",
            "-c",
            help="Python file with registered functions to import (as for spacy train).",
            show_default=False,
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train with spaCy's loop on several workers: each takes a share of every batch, the
    gradients are summed over the workers, rank 0 evaluates and saves. Config overrides
    (--training.max_steps 1000, --paths.train ...) follow the options, as for spacy train."""
    env = None
    try:
        if not config_path.is_file():
            raise FileNotFoundError(f"Config file not found: {config_path}")
        if code is not None and not code.is_file():
            raise FileNotFoundError(f"--code: Python file not found: {code}")
        overrides = parse_config_overrides(list(ctx.args))  # it empties the list it gets
        ids = parse_gpu_ids(gpu_ids)
        env = worker_env()
        if timeout <= 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {timeout:g}")
        # In the launcher and in each torchrun worker alike: a bad path is one clear error
        # before any worker waits for the others.
        check_corpus_paths(config_path, overrides)
        if env is None:
            if workers < 1:
                raise ValueError(f"--workers must be at least 1, got {workers}")
            if ids and len(ids) != workers:
                raise ValueError(
                    f"--gpu-ids names {len(ids)} GPU(s) for {workers} worker(s): give one each"
                )
            if output is not None:
                output.mkdir(parents=True, exist_ok=True)
            msg.info(f"Training on {workers} worker(s): " + (f"GPUs {ids}" if ids else "CPU"))
            command = [sys.executable, "-m", "spacy_crf_ner", "train", str(config_path)]
            if output is not None:
                command += ["--output", str(output)]
            if ids:
                command += ["--gpu-ids", ",".join(map(str, ids))]
            if code is not None:
                command += ["--code", str(code)]
            command += ["--timeout", str(timeout), *(["--verbose"] if verbose else []), *ctx.args]
            launch_workers(command, workers, cpu=not ids)
            if output is not None:
                msg.good(f"Saved the pipeline to {output}")
            return
        if ids and env.local_rank >= len(ids):
            raise ValueError(
                f"--gpu-ids {gpu_ids} names {len(ids)} GPU(s), but this worker's local rank is "
                f"{env.local_rank}: give one GPU per worker on each machine."
            )
        gpu_id = ids[env.local_rank] if ids else -1
        import_code(code)
        with show_validation_error(config_path, hint_fill=False):
            train_worker(config_path, output, overrides, env, gpu_id=gpu_id, timeout=timeout)
    except DistributedTrainingError as err:
        if env is None:  # the launcher: no process group of its own
            fail(str(err), verbose=verbose)
        if verbose:
            traceback.print_exc()
        exit_after_failure(str(err))
    except USER_ERRORS as err:
        fail(str(err), verbose=verbose)
