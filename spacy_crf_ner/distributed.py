"""Data-parallel training on torch.distributed: spaCy's own training loop in N processes.

Every rank builds the same pipeline from the same config and seed, reads the same corpus
and draws the same sequence of global batches; ``ShardedBatcher.v1`` hands each rank its
share of every global batch. Before each optimizer step the gradients of every trainable
parameter (Thinc's, and the torch parameters inside PyTorch shims: the BiLSTM, the
transformer) are summed over the ranks in a few flattened buckets (of an embedding table,
only the rows some rank used), so every rank makes the update one process would make on the
whole global batch and all weights stay identical.
crf_ner's loss is a sum over the batch's docs, so the sum of the shards' gradients *is* the
global batch's gradient (``reduction="mean"`` is there for losses averaged per batch).

Rank 0 alone evaluates, logs and saves; its scores are broadcast, so that every rank makes
the same best-checkpoint and patience decisions and stops at the same step. Weight
checksums are compared at the start and at every evaluation. Every collective has a
timeout (``init_process_group``) and a watchdog thread backs it up: a rank that dies or
hangs makes the others raise ``DistributedTrainingError`` instead of waiting forever.

Hooks into spaCy's loop (``spacy.training.loop.train_while_improving``, each trainable
pipe's ``finish_update``) are installed by ``distributed_training`` for the duration of the
run and removed after it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy
import torch
import torch.distributed as dist
from spacy.language import Language
from spacy.util import registry
from thinc.api import Model, torch2xp, xp2torch
from thinc.shims import PyTorchShim

DEFAULT_TIMEOUT = 600.0
"""Seconds a rank waits for the others at a collective (evaluation and saving on rank 0
included) before it gives up."""

BUCKET_BYTES = 25 * 1024 * 1024
"""Gradients are all-reduced in flat buckets of about this size (as torch's DDP does)."""

SPARSE_MIN_ROWS = 1024
"""Gradients of 2-D parameters with at least this many rows (embedding tables) are summed
row-sparse: only the rows that some rank's batch used are sent."""

logger = logging.getLogger("spacy_crf_ner")

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun (and ``train --workers``) sets for every worker."""


class DistributedTrainingError(RuntimeError):
    """Another rank died, hung or disagrees (weights, steps): this rank stops too."""


# --------------------------------------------------------------------------------------------
# Process group


@dataclass(frozen=True)
class WorkerEnv:
    """Where this process stands among the workers (from torchrun's environment)."""

    rank: int
    world_size: int
    local_rank: int


def worker_env() -> WorkerEnv | None:
    """This worker's rank and world size from the environment; None outside torchrun."""
    if "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in ENV_VARS if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} not: run the workers with torchrun "
            "or 'train --workers N', which set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT."
        )
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers: {err}") from None
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    return WorkerEnv(rank, world_size, local_rank)


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of the initialized process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_workers(env: WorkerEnv, *, gpu_id: int, timeout: float) -> bool:
    """Join the process group: gloo on the CPU (one torch thread per worker), NCCL on GPU.
    A group that a launcher set up already (Ray Train does) is used as it is: returns
    whether this call created the group (and so should destroy it)."""
    if timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}")
    if gpu_id >= 0:
        torch.cuda.set_device(gpu_id)
        # Raise in Python on a timed-out collective instead of aborting without a message.
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        backend = "nccl"
    else:
        torch.set_num_threads(1)
        backend = "gloo"
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (env.rank, env.world_size):
            raise ValueError(
                f"The process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"the worker's environment rank {env.rank} of {env.world_size}"
            )
        return False
    with collective_errors("joining the other workers", timeout):
        dist.init_process_group(
            backend,
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    return True


def shutdown_workers() -> None:
    """Leave the process group (every rank, at the end of a run that went well)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_after_failure(message: str) -> NoReturn:
    """Print a worker's error and end the process now, without tearing the group down.

    Once a peer has died, gloo can abort the whole process (SIGABRT, with no message of ours)
    while its connections to that peer are destroyed: ``destroy_process_group`` or the
    interpreter's exit runs C++ destructors that throw (pytorch/pytorch#50701 and gloo's
    "terminate called after throwing an instance of 'gloo::IoException'"). The error is
    printed first and the process leaves with ``os._exit``, skipping those destructors; what
    the run saves (spaCy's loop writes model-last on rank 0) is written before this point.
    """
    sys.stdout.flush()
    sys.stderr.write(f"✘ {message}\n")
    sys.stderr.flush()
    os._exit(1)


class Watchdog:
    """Ends the process when a collective outlives its timeout by ``grace`` seconds.

    torch's own timeout raises in most cases; this is the backstop for those where it does
    not (a peer that hangs without closing its connection under some backends), so that no
    rank can wait forever.
    """

    def __init__(self, grace: float = 30.0) -> None:
        self.grace = grace
        self._deadline: float | None = None
        self._what = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="crf_ner-watchdog", daemon=True)
        self._thread.start()

    def arm(self, what: str, timeout: float) -> None:
        with self._lock:
            self._deadline, self._what = time.monotonic() + timeout + self.grace, what

    def disarm(self) -> None:
        with self._lock:
            self._deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                expired = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
            if expired:
                rank, _ = rank_and_world_size()
                exit_after_failure(
                    f"Rank {rank}: no answer from the other workers while {what}; a worker "
                    "died or hangs. Stopping."
                )


_watchdog: Watchdog | None = None
_timeout = DEFAULT_TIMEOUT


def set_timeout(seconds: float) -> None:
    """The timeout the watchdog applies to every collective (as given to the group)."""
    global _timeout
    _timeout = float(seconds)


@contextlib.contextmanager
def collective_errors(what: str, timeout: float | None = None) -> Iterator[None]:
    """Turn torch's errors of a failed or timed-out collective into one clear error, and
    watch the collective with the watchdog."""
    global _watchdog
    if timeout is None:
        timeout = _timeout
    if _watchdog is None:
        _watchdog = Watchdog()
    _watchdog.arm(what, timeout)
    try:
        yield
    except (RuntimeError, ValueError) as err:
        if isinstance(err, DistributedTrainingError):
            raise
        rank, _ = rank_and_world_size()
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedTrainingError(
            f"Rank {rank}: the other workers did not answer while {what} (within {timeout:g} "
            f"s): a worker died, hung or failed; see its own error. ({detail})"
        ) from err
    finally:
        _watchdog.disarm()


# --------------------------------------------------------------------------------------------
# Batch sharding


def shard_batch(batch: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """This rank's share of a global batch: the items are dealt longest first to the rank
    with the fewest words so far (balanced work), each share in the batch's order. Every
    item goes to exactly one rank, so the shares together are the batch."""
    if world_size == 1:
        return list(batch)
    loads = [0] * world_size
    owner = [0] * len(batch)
    by_length = sorted(range(len(batch)), key=lambda i: (-_length(batch[i]), i))
    for i in by_length:
        target = min(range(world_size), key=lambda r: (loads[r], r))
        owner[i] = target
        loads[target] += max(_length(batch[i]), 1)
    return [item for i, item in enumerate(batch) if owner[i] == rank]


def _length(item: Any) -> int:
    try:
        return len(item)
    except TypeError:
        return 1


@registry.batchers("spacy_crf_ner.ShardedBatcher.v1")
def configure_sharded_batcher(
    batcher: Callable[[Iterable[Any]], Iterable[list[Any]]],
    rank: int | None = None,
    world_size: int | None = None,
) -> Callable[[Iterable[Any]], Iterator[list[Any]]]:
    """Wrap a batcher so that each rank gets its share of every batch the batcher makes.

    The wrapped batcher's batches are the global batches (the same on every rank, which
    reads the same corpus in the same order); ``rank`` and ``world_size`` default to the
    process group's (one process: the batches unchanged). A share may be empty when a batch
    has fewer docs than there are ranks: that rank then contributes no gradient to the step.
    """

    def sharded(items: Iterable[Any]) -> Iterator[list[Any]]:
        current_rank, current_size = rank_and_world_size()
        r = current_rank if rank is None else rank
        n = current_size if world_size is None else world_size
        if not 0 <= r < n:
            raise ValueError(f"ShardedBatcher.v1: rank {r} is not in 0..{n - 1}")
        for batch in batcher(items):
            yield shard_batch(list(batch), r, n)

    return sharded


def shard_config_batcher(config: dict[str, Any]) -> None:
    """Wrap ``[training.batcher]`` of a (not yet resolved) config in ShardedBatcher.v1."""
    batcher = config["training"]["batcher"]
    if batcher.get("@batchers") == "spacy_crf_ner.ShardedBatcher.v1":
        return
    config["training"]["batcher"] = {
        "@batchers": "spacy_crf_ner.ShardedBatcher.v1",
        "rank": None,
        "world_size": None,
        "batcher": batcher,
    }


# --------------------------------------------------------------------------------------------
# Parameters and gradients


@dataclass
class _Slot:
    """One trainable parameter and its gradient (None where this rank has none)."""

    name: str
    param: torch.Tensor
    grad: torch.Tensor | None
    set_param: Callable[[torch.Tensor], None]
    # Writes the gradient (all of it, or the rows given), creating it if there was none.
    write_grad: Callable[[torch.Tensor, torch.Tensor | None], None]


def trainable_pipes(nlp: Language, exclude: Iterable[str] = ()) -> list[tuple[str, Any]]:
    """The pipes whose ``finish_update`` spaCy's loop calls, in pipeline order (the test of
    ``train_while_improving``): trainable, with a model, not excluded (frozen)."""
    excluded = set(exclude)
    return [
        (name, proc)
        for name, proc in nlp.pipeline
        if name not in excluded
        and getattr(proc, "is_trainable", False)
        and proc.model not in (True, False, None)
    ]


def trainable_models(nlp: Language, exclude: Iterable[str] = ()) -> list[Model]:
    """The models that spaCy's loop updates."""
    return [proc.model for _, proc in trainable_pipes(nlp, exclude)]


def _slots(models: Sequence[Model]) -> list[_Slot]:
    """Every parameter of the models once (shared layers, e.g. a tok2vec reached through a
    listener, and shared shims counted once), in an order that is the same on every rank."""
    slots: list[_Slot] = []
    seen_nodes: set[int] = set()
    seen_shims: set[int] = set()
    for model in models:
        for node in model.walk():
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            for shim in node.shims:
                if id(shim) in seen_shims or not isinstance(shim, PyTorchShim):
                    continue
                seen_shims.add(id(shim))
                slots.extend(_torch_slots(node, shim))
            for name in node.param_names:
                if node.has_param(name):
                    slots.append(_thinc_slot(node, name))
    return slots


def _thinc_slot(node: Model, name: str) -> _Slot:
    param = node.get_param(name)
    grad = node.get_grad(name) if node.has_grad(name) else None

    def set_param(value: torch.Tensor) -> None:
        node.set_param(name, torch2xp(value.reshape(param.shape).clone(), ops=node.ops))

    def write_grad(value: torch.Tensor, rows: torch.Tensor | None) -> None:
        target = node.get_grad(name) if node.has_grad(name) else None
        if target is None:
            node.set_grad(name, node.ops.alloc(param.shape, dtype=param.dtype))
            target = node.get_grad(name)
        if rows is None:
            target[...] = torch2xp(value, ops=node.ops).reshape(param.shape)
        else:
            target[torch2xp(rows, ops=node.ops)] = torch2xp(value, ops=node.ops).reshape(
                (len(rows), *param.shape[1:])
            )

    return _Slot(
        f"{node.name}.{name}",
        xp2torch(param),
        None if grad is None else xp2torch(grad),
        set_param,
        write_grad,
    )


def _torch_slots(node: Model, shim: PyTorchShim) -> Iterator[_Slot]:
    for name, tensor in shim._model.named_parameters():
        if not tensor.requires_grad:
            continue

        def set_param(value: torch.Tensor, tensor: torch.Tensor = tensor) -> None:
            with torch.no_grad():
                tensor.data.copy_(value.view_as(tensor))

        def write_grad(
            value: torch.Tensor, rows: torch.Tensor | None, tensor: torch.Tensor = tensor
        ) -> None:
            with torch.no_grad():
                if tensor.grad is None:
                    tensor.grad = torch.zeros_like(tensor)
                if rows is None:
                    tensor.grad.copy_(value.view_as(tensor))
                else:
                    tensor.grad.index_copy_(0, rows, value.view(len(rows), *tensor.shape[1:]))

        yield _Slot(f"{node.name}.{name}", tensor.data, tensor.grad, set_param, write_grad)


def _buckets(slots: list[_Slot], sizes: Sequence[int], bucket_bytes: int) -> Iterator[list[int]]:
    """Consecutive slot positions whose ``sizes`` (floats) add up to about ``bucket_bytes``."""
    bucket: list[int] = []
    size = 0
    for i in range(len(slots)):
        bucket.append(i)
        size += sizes[i] * 4
        if size >= bucket_bytes:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


def _collective_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device()) if _uses_nccl() else torch.device("cpu")
    )


def _uses_nccl() -> bool:
    return dist.is_initialized() and dist.get_backend() == "nccl"


def _union_rows(slots: list[_Slot], min_rows: int, device: torch.device) -> tuple[list[Any], int]:
    """For each slot, the rows of its gradient that are non-zero on some rank (a LongTensor)
    where those are at most half of a table of ``min_rows`` rows or more; None elsewhere
    (the whole gradient is sent). One small all-reduce of the row masks decides it, so every
    rank takes the same rows; returns the rows and the number of collective calls (0 or 1).
    Embedding tables (hash embeddings, a transformer's word
    embeddings) have gradients in only the rows the batch used: sending those rows instead
    of the table cuts the volume several times (BENCHMARKS.md section 9)."""
    candidates = [
        i
        for i, slot in enumerate(slots)
        if slot.param.dim() == 2 and slot.param.shape[0] >= min_rows
    ]
    rows: list[Any] = [None] * len(slots)
    if not candidates:
        return rows, 0
    masks = []
    for i in candidates:
        grad = slots[i].grad
        if grad is None:
            masks.append(torch.zeros(slots[i].param.shape[0], dtype=torch.uint8, device=device))
        else:
            masks.append(grad.ne(0).any(dim=1).to(device=device, dtype=torch.uint8))
    union = torch.cat(masks)
    dist.all_reduce(union, op=dist.ReduceOp.MAX)
    offset = 0
    for i in candidates:
        n_rows = slots[i].param.shape[0]
        used = union[offset : offset + n_rows].nonzero().flatten()
        offset += n_rows
        if len(used) <= n_rows // 2:
            rows[i] = used
    return rows, 1


def all_reduce_gradients(
    models: Sequence[Model],
    *,
    reduction: str = "sum",
    bucket_bytes: int = BUCKET_BYTES,
    sparse_min_rows: int = SPARSE_MIN_ROWS,
) -> int:
    """Sum (or average) every trainable parameter's gradient over the ranks, in place.

    The gradients go in flat float32 buckets, each starting with one flag per parameter (1
    where this rank has a gradient), so that a parameter no rank has a gradient for stays
    without one (the optimizer then skips it, as it would in one process), and one that
    only some ranks have gets the sum. Of an embedding table only the rows some rank used
    are sent (``_union_rows``); the others are zero on every rank. Returns the number of
    collective calls made.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return 0
    device = _collective_device()
    slots = _slots(models)
    pending = []
    with collective_errors("summing the gradients"):
        rows, calls = _union_rows(slots, sparse_min_rows, device)
        sizes = [
            slot.param.numel() if r is None else len(r) * slot.param[0].numel()
            for slot, r in zip(slots, rows, strict=True)
        ]
        for bucket in _buckets(slots, sizes, bucket_bytes):
            parts = [
                torch.tensor(
                    [0.0 if slots[i].grad is None else 1.0 for i in bucket],
                    dtype=torch.float32,
                    device=device,
                )
            ]
            for i in bucket:
                grad = slots[i].grad
                if grad is None:
                    parts.append(torch.zeros(sizes[i], dtype=torch.float32, device=device))
                    continue
                if rows[i] is not None:
                    grad = grad.index_select(0, rows[i].to(grad.device))
                parts.append(grad.detach().reshape(-1).to(device=device, dtype=torch.float32))
            flat = torch.cat(parts)
            pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
        for _, _, work in pending:
            work.wait()
    for bucket, flat, _ in pending:
        if reduction == "mean":
            flat[len(bucket) :] /= world_size
        flags = flat[: len(bucket)].tolist()
        offset = len(bucket)
        for flag, i in zip(flags, bucket, strict=True):
            slot = slots[i]
            if flag > 0:
                value = flat[offset : offset + sizes[i]].to(slot.param.device, slot.param.dtype)
                row_index = None if rows[i] is None else rows[i].to(slot.param.device)
                slot.write_grad(value, row_index)
            offset += sizes[i]
    return calls + len(pending)


def broadcast_parameters(models: Sequence[Model], *, src: int = 0) -> None:
    """Give every rank rank ``src``'s weights (bucketed broadcasts)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return
    device = _collective_device()
    with collective_errors("copying the initial weights"):
        slots = _slots(models)
        for positions in _buckets(slots, [s.param.numel() for s in slots], BUCKET_BYTES):
            bucket = [slots[i] for i in positions]
            flat = torch.cat(
                [s.param.detach().reshape(-1).to(device, torch.float32) for s in bucket]
            )
            dist.broadcast(flat, src=src)
            offset = 0
            for slot in bucket:
                n = slot.param.numel()
                slot.set_param(flat[offset : offset + n].to(slot.param.device, slot.param.dtype))
                offset += n


def weights_checksum(models: Sequence[Model]) -> int:
    """A 63-bit digest of every parameter's exact bytes."""
    digest = hashlib.blake2b(digest_size=8)
    for slot in _slots(models):
        digest.update(slot.name.encode())
        digest.update(slot.param.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1


def ranks_differ(models: Sequence[Model], when: str) -> list[int]:
    """The ranks whose weights differ from rank 0's (compared by checksum; the same answer
    on every rank)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return []
    mine = torch.tensor([weights_checksum(models)], dtype=torch.int64, device=_collective_device())
    gathered = [torch.zeros_like(mine) for _ in range(world_size)]
    with collective_errors(f"comparing weights {when}"):
        dist.all_gather(gathered, mine)
    sums = [int(t.item()) for t in gathered]
    return [rank for rank, value in enumerate(sums) if value != sums[0]]


def check_same_weights(models: Sequence[Model], when: str) -> None:
    """Raise on every rank if the ranks' weights differ."""
    differing = ranks_differ(models, when)
    if differing:
        raise DistributedTrainingError(
            f"The weights of rank(s) {differing} differ from rank 0's {when}: the ranks "
            "did not make the same updates (a component whose gradients are not all-reduced, "
            "or ranks that read different data)."
        )


def start_from_same_weights(models: Sequence[Model]) -> list[int]:
    """Check that every rank initialized the same weights, as the same config and seed
    should give; where not (e.g. a component that initializes from an unseeded source),
    give every rank rank 0's weights, with a warning. Returns the ranks that differed."""
    differing = ranks_differ(models, "at the start")
    if differing:
        logger.warning(
            "[crf_ner] Rank(s) %s initialized other weights than rank 0 from the same config "
            "and seed; all ranks start from rank 0's.",
            differing,
        )
        broadcast_parameters(models)
        check_same_weights(models, "after copying rank 0's weights")
    return differing


def broadcast_object(value: Any, what: str, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank."""
    holder = [value]
    with collective_errors(what):
        dist.broadcast_object_list(holder, src=src, device=_collective_device())
    return holder[0]


def barrier(what: str) -> None:
    """Wait until every rank gets here (or the timeout)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return
    with collective_errors(what):
        if _uses_nccl():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


# --------------------------------------------------------------------------------------------
# Hooks into spaCy's training loop


class GradientSync:
    """Installs the gradient all-reduce before the first ``finish_update`` of every step.

    spaCy's loop calls ``finish_update(optimizer)`` on every trainable pipe once per step,
    in pipeline order, whatever the batch held; the first of these calls sums the gradients
    of all of them, then each pipe's own ``finish_update`` steps the optimizer.
    """

    def __init__(self, nlp: Language, exclude: Iterable[str], reduction: str = "sum") -> None:
        self.procs = trainable_pipes(nlp, exclude)
        self.models = [proc.model for _, proc in self.procs]
        self.reduction = reduction
        self.collectives = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if not self.procs:
            yield
            return
        name, first = self.procs[0]
        original = first.finish_update

        def finish_update(sgd: Any) -> None:
            self.collectives += all_reduce_gradients(self.models, reduction=self.reduction)
            original(sgd)

        try:
            first.finish_update = finish_update
        except AttributeError:
            raise ValueError(
                f"Component '{name}' ({type(first).__name__}) can't be trained on several "
                "workers: its finish_update can't be hooked (a Cython component). Train it "
                "in one process, or freeze it ([training] frozen_components)."
            ) from None
        try:
            yield
        finally:
            del first.finish_update


def _evaluate_on_rank_0(evaluate: Callable[[], Any], models: Sequence[Model]) -> Callable:
    """An evaluation callback that checks the ranks' weights agree, evaluates on rank 0
    and gives its scores to every rank (so they all take the same decisions)."""

    def distributed_evaluate() -> Any:
        check_same_weights(models, "at an evaluation")
        rank, _ = rank_and_world_size()
        result = evaluate() if rank == 0 else None
        return broadcast_object(result, "waiting for rank 0's evaluation")

    return distributed_evaluate


def _sum_logged_counts(info: dict[str, Any], pipe_names: Sequence[str]) -> None:
    """At a logged step: the losses and words seen of all ranks, not only this rank's share
    (one small all-reduce), so that the log reads as a one-process run's would."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return
    losses = info["losses"]
    # The trainable pipes, the same on every rank (a rank whose shares were empty since the
    # last evaluation has no loss entries yet).
    names = sorted(pipe_names)
    counts = torch.tensor(
        [float(info["words"])] + [float(losses.get(name, 0.0)) for name in names],
        dtype=torch.float64,
        device=_collective_device(),
    )
    with collective_errors("summing the logged losses"):
        dist.all_reduce(counts)
    values = counts.tolist()
    info["words"] = int(values[0])
    for name, value in zip(names, values[1:], strict=True):
        if name in losses or value:
            losses[name] = value


@contextlib.contextmanager
def distributed_training(reduction: str = "sum") -> Iterator[None]:
    """Within the block, ``spacy.training.loop.train`` trains data-parallel over the process
    group: gradients all-reduced each step, rank 0 alone evaluates (scores broadcast)."""
    from spacy.training import loop

    original = loop.train_while_improving

    def train_while_improving(nlp: Language, optimizer: Any, train_data: Any, evaluate: Any, **kw):
        sync = GradientSync(nlp, kw.get("exclude", ()), reduction)
        evaluate = _evaluate_on_rank_0(evaluate, trainable_models(nlp))
        with sync.installed():
            for batch, info, is_best_checkpoint in original(
                nlp, optimizer, train_data, evaluate, **kw
            ):
                if is_best_checkpoint is not None:
                    _sum_logged_counts(info, [name for name, _ in sync.procs])
                yield batch, info, is_best_checkpoint

    loop.train_while_improving = train_while_improving
    try:
        yield
    finally:
        loop.train_while_improving = original


# --------------------------------------------------------------------------------------------
# One worker's run


def train_worker(
    config_path: str | Path,
    output_path: Path | None,
    overrides: dict[str, Any],
    env: WorkerEnv,
    *,
    gpu_id: int = -1,
    timeout: float = DEFAULT_TIMEOUT,
    reduction: str = "sum",
) -> Language:
    """Train as one rank of ``env.world_size`` on GPU ``gpu_id`` (-1: the CPU): spaCy's
    init and loop with this module's hooks. Rank 0 writes ``output_path`` (model-best,
    model-last) and logs; the others are silent. Returns the trained pipeline (the same
    weights on every rank)."""
    from spacy import util
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train as train_nlp

    from .loaders import setup_gpu

    setup_gpu(gpu_id)
    set_timeout(timeout)
    if env.rank == 0 and output_path is not None:
        Path(output_path).mkdir(parents=True, exist_ok=True)
    created_group = init_workers(env, gpu_id=gpu_id, timeout=timeout)
    peer_lost = False
    try:
        config = util.load_config(config_path, overrides=overrides, interpolate=False)
        shard_config_batcher(config)
        if env.rank:  # silent: rank 0 logs (and the config's logger may write files)
            config["training"]["logger"] = {
                "@loggers": "spacy.ConsoleLogger.v1",
                "progress_bar": False,
            }
        with contextlib.ExitStack() as stack:
            quiet = stack.enter_context(open(os.devnull, "w")) if env.rank else None
            with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
                nlp = init_nlp(config, use_gpu=gpu_id)
            frozen = nlp.config["training"].get("frozen_components", [])
            models = trainable_models(nlp, frozen)
            start_from_same_weights(models)
            with distributed_training(reduction):
                train_nlp(
                    nlp,
                    output_path if env.rank == 0 else None,
                    use_gpu=gpu_id,
                    stdout=quiet or sys.stdout,
                    stderr=quiet or sys.stderr,
                )
        check_same_weights(models, "at the end")
        barrier("finishing (rank 0 saves the pipeline)")
        return nlp
    except DistributedTrainingError:
        peer_lost = True  # the group is left as it is: see exit_after_failure
        raise
    finally:
        if created_group and not peer_lost:
            shutdown_workers()


def parameter_arrays(nlp: Language) -> dict[str, numpy.ndarray]:
    """Every parameter of the pipeline's trainable models as numpy arrays (for comparing
    ranks or runs), keyed by position and name."""
    arrays = {}
    for i, slot in enumerate(_slots(trainable_models(nlp))):
        arrays[f"{i:04d}.{slot.name}"] = slot.param.detach().cpu().numpy().copy()
    return arrays


# --------------------------------------------------------------------------------------------
# Launching workers on this machine


def free_port() -> int:
    """A TCP port that is free now on this machine (for MASTER_PORT)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def launch_workers(command: Sequence[str], workers: int, *, cpu: bool, grace: float = 30.0) -> None:
    """Run ``command`` in ``workers`` processes with torchrun's environment variables, and
    wait for all of them. When one fails, the others get ``grace`` seconds to notice and
    stop (they do, at their next collective), then are ended; the error names the workers
    that failed, those killed by a signal (the cause) first. Interrupting (Ctrl-C) ends them all."""
    import subprocess

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    port = free_port()
    procs: list[subprocess.Popen] = []
    # SIGTERM (kill, a job scheduler) ends the workers too, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for rank in range(workers):
            env = dict(os.environ)
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(workers),
                LOCAL_WORLD_SIZE=str(workers),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
            if cpu:
                env.update(OMP_NUM_THREADS="1", SPACY_CRF_NER_THREADS="1")
            procs.append(subprocess.Popen(list(command), env=env))
        deadline: float | None = None
        while any(proc.poll() is None for proc in procs):
            if deadline is None and any(proc.returncode not in (None, 0) for proc in procs):
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # A worker killed by a signal is the cause; the others' errors follow from it, and so
        # does a SIGABRT, which gloo raises in a worker whose peer vanished.
        failed = sorted(
            ((rank, proc.returncode) for rank, proc in enumerate(procs) if proc.returncode),
            key=lambda item: (item[1] > 0, item[1] == -signal.SIGABRT, item[0]),
        )
        if failed:
            raise DistributedTrainingError(
                "; ".join(
                    f"Worker {rank} of {workers} "
                    + (f"was killed by signal {-code}" if code < 0 else f"exited with code {code}")
                    for rank, code in failed
                )
                + ". The other workers were stopped; see the workers' errors above."
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
