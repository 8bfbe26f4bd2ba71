"""How many torch threads crf_ner uses, in the main process and in worker processes.

Why this module exists:

* **Forked workers hang.** PyTorch's CPU wheels run their intra-op parallelism (and MKL) on
  GNU OpenMP. Once a process has run one parallel region with more than one thread,
  libgomp keeps a pool of worker threads; ``fork`` copies only the calling thread, and the
  child's next parallel region waits forever for pool threads that do not exist (seen in gdb
  as ``GOMP_parallel`` -> ``mkl_blas_sgemm`` spinning in ``sched_yield``). spaCy's
  ``nlp.pipe(n_process=N)`` forks on Linux, so its workers hung as soon as the parent had
  run torch on two threads. A child on one thread never enters a parallel region, so an
  ``os.register_at_fork`` hook sets one torch thread in every forked child, before any
  torch op can run there (any component's, not only ours).
* **Spawned workers oversubscribe.** A spawned (or forkserver) worker starts a fresh torch
  with one thread per core: N workers then run N x cores threads, which busy-wait on each
  other. Importing this module in a worker (it is imported when the pipeline is unpickled
  there) sets the worker's torch threads to ``inference_threads()``.
* **The main process under contention.** Two OpenMP threads on two cores that another
  process also uses spin at every barrier: crf_ner's words/s fell ~25x next to one
  CPU-bound job. The BiLSTM-CRF's matrices are small: on 2 cores two threads gained 12% when
  the machine was idle and lost 33% to 94% whenever another process ran (BENCHMARKS.md
  section 6), so one thread is the default. crf_ner's ``predict`` therefore
  runs on ``inference_threads()`` threads (default 1) and then restores torch's setting:
  the rest of the process (e.g. a spacy-transformers ``transformer`` component) keeps it.

Setting: the environment variable ``SPACY_CRF_NER_THREADS`` (or ``set_inference_threads``,
which writes it, so that workers started later inherit it): a positive number of threads
for crf_ner's inference and for each spawned worker, or 0 to leave torch's thread count as
it is. Forked workers always start on one thread (more would hang, see above); use the
spawn start method for more threads per worker.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

THREADS_ENV = "SPACY_CRF_NER_THREADS"
DEFAULT_THREADS = 1


def inference_threads() -> int:
    """The torch threads crf_ner's inference uses (0: whatever torch is set to)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return DEFAULT_THREADS
    try:
        threads = int(value)
    except ValueError:
        threads = -1
    if threads < 0:
        raise ValueError(
            f"[crf_ner] {THREADS_ENV}={value!r}: expected a number of torch threads (1, 2, "
            "...) or 0 to leave torch's thread count as it is."
        )
    return threads


def set_inference_threads(threads: int) -> None:
    """Use ``threads`` torch threads for crf_ner's inference here and in worker processes
    started from now on (0: leave torch's thread count alone)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"[crf_ner] threads must be a non-negative integer; got {threads!r}")
    os.environ[THREADS_ENV] = str(threads)


@contextmanager
def torch_threads() -> Iterator[None]:
    """Run the block on ``inference_threads()`` torch threads, then restore torch's setting."""
    threads = inference_threads()
    torch = sys.modules.get("torch")
    if not threads or torch is None or torch.get_num_threads() == threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_thread_after_fork() -> None:
    """In a forked child: one torch thread, so that no OpenMP parallel region is entered."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _configure_spawned_worker() -> None:
    """In a fresh worker process (spawn, forkserver): ``inference_threads()`` threads."""
    threads = inference_threads()
    if threads:
        try:
            import torch
        except ImportError:  # an exported (onnxruntime) pipeline in a torch-free install
            return
        torch.set_num_threads(threads)


def _in_worker_process() -> bool:
    """Whether this is a multiprocessing worker. While a spawned worker unpickles its task
    (which imports this module), ``parent_process()`` is still None; the process object's
    ``_inheriting`` flag is what multiprocessing itself checks then."""
    current = multiprocessing.current_process()
    return multiprocessing.parent_process() is not None or getattr(current, "_inheriting", False)


os.register_at_fork(after_in_child=_one_thread_after_fork)
if _in_worker_process():
    _configure_spawned_worker()
