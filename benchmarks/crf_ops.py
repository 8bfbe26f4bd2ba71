"""What the GPU will pay, counted on the CPU: aten operations dispatched per CRF call.

A ``TorchDispatchMode`` counts every aten operation that reaches the backend during one call
(after autograd, so the backward pass is counted too) for each algorithm, task and length. On
a GPU every non-view operation is (at least) one kernel launch, ~5-10 us whatever its size, so
at small batch sizes the count is the time. Host synchronisations (``_local_scalar_dense``,
i.e. ``.item()`` / ``bool(tensor)``, and ``nonzero``) are counted apart; the ones made by the
input checks that only run on CPU tensors (``_check_inputs``, ``_check_tags``: free on the CPU,
skipped on CUDA) are reported in their own column, the others are what a GPU would wait for.

    python benchmarks/crf_ops.py            # B = 32, K = 17, T = 32, 128, 512, 2048
    python benchmarks/crf_ops.py --batch 2 --tags 5 --lengths 8 32   # quick
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spacy_crf_ner import crf

SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::item"}
CPU_ONLY_CHECKS = {"_check_inputs", "_check_tags"}
TASKS = ("log Z + backward", "NLL + backward", "marginals", "Viterbi")


@dataclass
class Counts:
    ops: int = 0  # every aten op
    kernels: int = 0  # non-view ops: what a GPU launches
    syncs: int = 0  # host synchronisations a GPU would make
    check_syncs: int = 0  # host synchronisations of the CPU-only input checks


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self.names: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.counts.ops += 1
        self.names[name] += 1
        if not func.is_view:
            self.counts.kernels += 1
        if name in SYNC_OPS:
            if _called_from(CPU_ONLY_CHECKS):
                self.counts.check_syncs += 1
            else:
                self.counts.syncs += 1
        return func(*args, **(kwargs or {}))


def _called_from(names: set[str]) -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name in names:
            return True
        frame = frame.f_back
    return False


def make_case(batch: int, length: int, num_tags: int, seed: int = 0):
    """Random float32 emissions, a ragged mask (lengths in [T/2, T]), gold tags, parameters."""
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, length, num_tags, generator=gen)
    lengths = torch.randint(max(1, length // 2), length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.randint(0, num_tags, (batch, length), generator=gen)
    params = [torch.randn(num_tags, num_tags, generator=gen) * 0.1]
    params += [torch.randn(num_tags, generator=gen) * 0.1 for _ in range(2)]
    return emissions, mask, tags, params


def count(task: str, algorithm: str, batch: int, length: int, num_tags: int) -> Counts:
    """Op counts of one call of ``task`` (one of ``TASKS``) with ``algorithm``."""
    emissions, mask, tags, params = make_case(batch, length, num_tags)
    leaves = [emissions.requires_grad_(True)] + [p.requires_grad_(True) for p in params]
    counter = OpCounter()
    with counter:
        if task == "log Z + backward":
            crf.log_partition(*leaves[:1], mask, *leaves[1:], algorithm=algorithm).sum().backward()
        elif task == "NLL + backward":
            crf.nll(leaves[0], mask, *leaves[1:], tags=tags, algorithm=algorithm).backward()
        elif task == "marginals":
            with torch.no_grad():
                crf.marginals(emissions, mask, *params, algorithm=algorithm)
        elif task == "Viterbi":
            with torch.no_grad():
                crf.viterbi(emissions, mask, *params, algorithm=algorithm)
        else:
            raise ValueError(f"unknown task {task!r}")
    return counter.counts


def table(batch: int, num_tags: int, lengths: list[int]) -> list[str]:
    head = " | ".join(f"T={t}" for t in lengths)
    lines = [
        f"| task | algorithm | {head} | T={lengths[-1]} / T={lengths[0]} | host syncs "
        "(GPU) | host syncs (CPU-only checks) |",
        "|---|---|" + "---|" * len(lengths) + "---|---|---|",
    ]
    for task in TASKS:
        for algorithm in ("sequential", "parallel"):
            counts = [count(task, algorithm, batch, t, num_tags) for t in lengths]
            kernels = [c.kernels for c in counts]
            syncs = sorted({c.syncs for c in counts})
            checks = sorted({c.check_syncs for c in counts})
            lines.append(
                f"| {task} | {algorithm} | "
                + " | ".join(str(k) for k in kernels)
                + f" | {kernels[-1] / kernels[0]:.1f}x | "
                + "/".join(map(str, syncs))
                + " | "
                + "/".join(map(str, checks))
                + " |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tags", type=int, default=17)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512, 2048])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}: non-view aten ops per call (= GPU kernel launches), "
        f"B={args.batch}, K={args.tags}, float32 emissions, ragged lengths in [T/2, T]"
    )
    print("\n".join(table(args.batch, args.tags, args.lengths)))


if __name__ == "__main__":
    main()
