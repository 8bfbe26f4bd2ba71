"""Data-parallel training (``spacy_crf_ner.distributed``, ``train --workers``) on CPU with gloo.

The references are independent of the code under test: spaCy's own ``spacy train`` in one
process on the whole global batch, the weights each rank holds (compared array by array,
not by the module's checksum), and a freshly initialized pipeline (the weights must have
moved). The multi-process tests start fresh interpreters, so they are marked slow, as the
project's other subprocess tests are.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training.initialize import init_nlp
from thinc.api import Config
from typer.testing import CliRunner

from spacy_crf_ner.cli import app
from spacy_crf_ner.distributed import (
    GradientSync,
    configure_sharded_batcher,
    parameter_arrays,
    shard_batch,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# A small BiLSTM-CRF without any dropout (the equivalence is exact only without it), a global
# batch of 4 docs (5 training docs: every epoch ends with a 1-doc batch, so one of the two
# workers gets an empty share), and a high learning rate so that 10 steps move the weights.
SMALL_TOK2VEC = {
    "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
    "width": 32,
    "embed_size": 2000,  # over SPARSE_MIN_ROWS rows: the row-sparse all-reduce is used
    "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    "include_static_vectors": False,
    "char_features": 8,
    "lstm_width": 32,
    "lstm_depth": 1,
    "lstm_dropout": 0.0,
}


def write_corpus(path: Path, data: list) -> Path:
    nlp = spacy.blank("en")
    docbin = DocBin()
    for text, entities in data:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(start, end, label=label) for start, end, label in entities]
        docbin.add(doc)
    docbin.to_disk(path)
    return path


def write_setup(folder: Path, data: list, steps: int) -> Path:
    """A training corpus (train = dev) and a config training on it for ``steps`` steps."""
    write_corpus(folder / "train.spacy", data)
    config = Config().from_disk(CONFIGS / "bilstm_crf.cfg", interpolate=False)
    config["paths"]["train"] = str(folder / "train.spacy")
    config["paths"]["dev"] = str(folder / "train.spacy")
    model = config["components"]["crf_ner"]["model"]
    model["dropout"] = 0.0
    model["tok2vec"] = dict(SMALL_TOK2VEC)
    config["training"]["dropout"] = 0.0
    config["training"]["batcher"] = {
        "@batchers": "spacy.batch_by_sequence.v1",
        "size": 4,
        "get_length": None,
    }
    config["training"]["max_steps"] = steps
    config["training"]["eval_frequency"] = 5
    config["training"]["optimizer"]["learn_rate"] = 0.01
    path = folder / "config.cfg"
    config.to_disk(path)
    return path


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def torchrun_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What torchrun sets for a worker."""
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def max_difference(a: dict[str, numpy.ndarray], b: dict[str, numpy.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(numpy.abs(a[key] - b[key]).max()) for key in a)


# --------------------------------------------------------------------------------------------
# Sharding (in process)


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shares_partition_each_batch_in_order(world_size):
    batch = [list(range(n)) for n in (5, 1, 9, 3, 3, 12, 0, 4)]
    shares = [shard_batch(batch, rank, world_size) for rank in range(world_size)]
    dealt = sorted(id(item) for share in shares for item in share)
    assert dealt == sorted(id(item) for item in batch)
    for share in shares:
        positions = [next(i for i, x in enumerate(batch) if x is item) for item in share]
        assert positions == sorted(positions)
    # Balanced: no share has more words than the longest doc beyond the lightest share.
    words = [sum(len(item) for item in share) for share in shares]
    assert max(words) - min(words) <= max(len(item) for item in batch)


def test_sharded_batcher_gives_each_rank_its_share():
    def batcher(items):
        items = list(items)
        for start in range(0, len(items), 5):
            yield items[start : start + 5]

    items = [[0] * (i % 4 + 1) for i in range(12)]
    global_batches = list(batcher(items))
    per_rank = [
        list(configure_sharded_batcher(batcher, rank=rank, world_size=2)(items))
        for rank in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) == len(global_batches)
    for step, batch in enumerate(global_batches):
        together = per_rank[0][step] + per_rank[1][step]
        assert sorted(map(id, together)) == sorted(map(id, batch))
    # Outside a process group: the batches unchanged.
    assert list(configure_sharded_batcher(batcher)(items)) == global_batches


# --------------------------------------------------------------------------------------------
# The gradient all-reduce, against numpy's sum of the two ranks' gradients

# Each rank gives its model gradients that depend on its rank, saves them, all-reduces and
# saves the result. Covered: a dense Thinc parameter, one that only rank 0 has a gradient
# for, an embedding table (2000 rows: row-sparse) with different rows on the two ranks, a
# table without any gradient, and the weight and bias of a torch module in a PyTorch shim
# (the bias without a gradient on rank 1).
GRADIENT_SCRIPT = """
import sys
from pathlib import Path
import numpy, torch
from thinc.api import Linear, Model, PyTorchWrapper_v2, chain
from spacy_crf_ner.distributed import (
    all_reduce_gradients, init_workers, start_from_same_weights, worker_env
)

env = worker_env()
init_workers(env, gpu_id=-1, timeout=60)
r = env.rank
table = Model("table", lambda model, X, is_train: (X, lambda dY: dY), params={"E": None, "F": None})
table.set_param("E", numpy.zeros((2000, 3), dtype="f"))
table.set_param("F", numpy.zeros((2000, 3), dtype="f"))
linear = Linear(3, 4)
linear.initialize()
torch.manual_seed(0)
wrapped = PyTorchWrapper_v2(torch.nn.Linear(4, 2))
model = chain(table, linear, wrapped)
rng = numpy.random.default_rng(r)
linear.set_grad("W", rng.normal(size=(3, 4)).astype("f"))
if r == 0:
    linear.set_grad("b", rng.normal(size=(3,)).astype("f"))
E = numpy.zeros((2000, 3), dtype="f")
E[[1, 5] if r == 0 else [5, 7]] = rng.normal(size=(2, 3))
table.set_grad("E", E)
torch_linear = wrapped.shims[0]._model
torch_linear.weight.grad = torch.from_numpy(rng.normal(size=(2, 4)).astype("f"))
if r == 0:
    torch_linear.bias.grad = torch.from_numpy(rng.normal(size=(2,)).astype("f"))

def grads():
    found = {}
    for node, name in [(table, "E"), (table, "F"), (linear, "W"), (linear, "b")]:
        if node.has_grad(name):
            found[f"{node.name}.{name}"] = numpy.array(node.get_grad(name))
    for name, p in torch_linear.named_parameters():
        if p.grad is not None:
            found[f"torch.{name}"] = p.grad.numpy().copy()
    return found

folder = Path(sys.argv[1])
numpy.savez(folder / f"before{r}.npz", **grads())
calls = all_reduce_gradients([model])
numpy.savez(folder / f"after{r}.npz", **grads())
print("collectives", calls)
# Different initial weights on the two ranks: both start from rank 0's.
linear.set_param("W", numpy.full((3, 4), r + 1.0, dtype="f"))
print("differing", start_from_same_weights([model]))
numpy.savez(folder / f"weights{r}.npz", W=linear.get_param("W"), E=table.get_param("E"))
# Leave together: a rank that exits while the other still holds the group can make gloo
# abort the other (SIGABRT on "connection reset by peer").
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_gradients_are_summed_and_initial_weights_made_equal(tmp_path):
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GRADIENT_SCRIPT, str(tmp_path)],
            env=torchrun_env(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        outputs.append(out)
    before = [dict(numpy.load(tmp_path / f"before{rank}.npz")) for rank in range(2)]
    after = [dict(numpy.load(tmp_path / f"after{rank}.npz")) for rank in range(2)]
    names = set(before[0]) | set(before[1])
    assert "table.F" not in names and "linear.b" not in before[1]  # the cases are there
    expected = {
        name: before[0].get(name, 0) + before[1].get(name, 0) for name in names
    }  # numpy's sum; a gradient missing on a rank counts as 0
    for rank in range(2):
        assert set(after[rank]) == names  # none added where no rank had one
        for name in names:
            numpy.testing.assert_allclose(after[rank][name], expected[name], rtol=1e-6)
    assert numpy.count_nonzero(expected["table.E"].any(axis=1)) == 3  # rows 1, 5 and 7
    assert all("collectives 2" in out for out in outputs)  # the used rows, then one bucket
    # Initial weights that differ are replaced by rank 0's on every rank.
    assert all("differing [1]" in out for out in outputs)
    for rank in range(2):
        weights = numpy.load(tmp_path / f"weights{rank}.npz")
        assert (weights["W"] == 1.0).all() and (weights["E"] == 0.0).all()


def test_a_first_component_that_cannot_be_hooked_is_refused():
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")  # a Cython class: its finish_update can't be replaced
    nlp.add_pipe("crf_ner")
    with pytest.raises(ValueError, match="Component 'ner' .*frozen_components"):
        with GradientSync(nlp, exclude=()).installed():
            pass
    # Frozen, it is not hooked; crf_ner is, and is restored afterwards.
    sync = GradientSync(nlp, exclude=["ner"])
    with sync.installed():
        assert "finish_update" in vars(nlp.get_pipe("crf_ner"))
    assert "finish_update" not in vars(nlp.get_pipe("crf_ner"))


# --------------------------------------------------------------------------------------------
# Command-line errors (in process: they come before any worker starts)


def assert_one_error_line(result, *names: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if line.startswith("✘")], result.output
    for name in names:
        assert name in result.output, (name, result.output)


@pytest.mark.parametrize(
    "args,names",
    [
        (["missing.cfg"], ["Config file not found", "missing.cfg"]),
        (["{config}", "--workers", "2", "--gpu-ids", "0"], ["--gpu-ids", "2 worker(s)"]),
        (["{config}", "--gpu-ids", "0,x"], ["--gpu-ids", "0,x"]),
        (["{config}", "--gpu-ids", "1,1", "--workers", "2"], ["--gpu-ids", "distinct"]),
        (["{config}", "--workers", "0"], ["--workers", "at least 1"]),
        (["{config}", "--timeout", "0"], ["--timeout", "positive"]),
        (["{config}", "--workers", "2", "--paths.train", "nope.spacy"], ["--paths.train", "nope"]),
        (["{config}", "--workers", "2", "--paths.dev", "nope.spacy"], ["--paths.dev", "nope"]),
        (["{config}", "--paths.train", "{config}"], ["--paths.train", "not a .spacy", "convert"]),
        (["{config}", "--paths.dev", "{empty}"], ["--paths.dev", "nor a directory", "convert"]),
    ],
)
def test_command_line_errors(tmp_path, en_train_data, args, names):
    config = write_setup(tmp_path, en_train_data, steps=1)
    (tmp_path / "empty").mkdir()
    args = [arg.format(config=config, empty=tmp_path / "empty") for arg in args]
    assert_one_error_line(CliRunner().invoke(app, ["train", *args]), *names)


def test_torchrun_environment_errors(tmp_path, en_train_data, monkeypatch):
    config = write_setup(tmp_path, en_train_data, steps=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    result = CliRunner().invoke(app, ["train", str(config)])
    assert_one_error_line(result, "WORLD_SIZE is set but RANK")


def test_a_torchrun_worker_names_a_missing_corpus_before_waiting_for_the_others(
    tmp_path, en_train_data, monkeypatch
):
    """No peer ever comes: the worker must fail on the path at once, not after --timeout."""
    config = write_setup(tmp_path, en_train_data, steps=1)
    for key, value in torchrun_env(0, 2, free_port()).items():
        monkeypatch.setenv(key, value)
    begin = time.monotonic()
    result = CliRunner().invoke(
        app, ["train", str(config), "--timeout", "60", "--paths.dev", "nope.spacy"]
    )
    assert_one_error_line(result, "--paths.dev", "nope.spacy")
    assert time.monotonic() - begin < 30


# --------------------------------------------------------------------------------------------
# Two gloo workers


@pytest.fixture(scope="module")
def two_workers_10_steps(tmp_path_factory, en_train_data):
    """``train --workers 2`` and spaCy's ``spacy train`` (one process, the same global
    batches) on the same config: 10 steps each."""
    folder = tmp_path_factory.mktemp("ddp")
    # 3 steps in the file, 10 by an override: the launcher must pass overrides on.
    config = write_setup(folder, en_train_data, steps=3)
    steps = ["--training.max_steps", "10"]
    ddp = run(
        [sys.executable, "-m", "spacy_crf_ner", "train", str(config), "--workers", "2",
         "--output", str(folder / "ddp"), "--timeout", "60", *steps]
    )  # fmt: skip
    one = run(
        [sys.executable, "-m", "spacy", "train", str(config), "--output", str(folder / "one"),
         *steps]
    )  # fmt: skip
    return folder, config, ddp.stdout, one.stdout


def logged_rows(stdout: str) -> list[list[float]]:
    """The console logger's rows: epoch, step, loss, P/R/F and score."""
    return [
        [float(value) for value in line.split()]
        for line in stdout.splitlines()
        if re.match(r"\s*\d+\s+\d+\s+[\d.]+\s", line)
    ]


@pytest.mark.slow
def test_two_workers_make_the_updates_of_one_on_the_global_batch(two_workers_10_steps):
    folder, config, ddp_log, one_log = two_workers_10_steps
    ddp = parameter_arrays(spacy.load(folder / "ddp" / "model-last"))
    one = parameter_arrays(spacy.load(folder / "one" / "model-last"))
    assert max_difference(ddp, one) < 1e-5
    initial = parameter_arrays(init_nlp(spacy.util.load_config(config)))
    assert max_difference(ddp, initial) > 1e-3  # the weights did move
    # The log shows the losses of all workers together: those of the one process.
    ddp_rows, one_rows = logged_rows(ddp_log), logged_rows(one_log)
    assert len(ddp_rows) == len(one_rows) == 3  # steps 0, 5, 10
    for ddp_row, one_row in zip(ddp_rows, one_rows, strict=True):
        assert ddp_row == pytest.approx(one_row, rel=1e-3, abs=0.011)


@pytest.mark.slow
def test_the_saved_pipeline_loads_and_tags(two_workers_10_steps, en_train_data):
    folder, *_ = two_workers_10_steps
    nlp = spacy.load(folder / "ddp" / "model-best")
    assert nlp.pipe_names == ["crf_ner"]
    assert nlp.config["training"]["batcher"]["batcher"]["@batchers"] == "spacy.batch_by_sequence.v1"
    for doc, (_, entities) in zip(
        nlp.pipe(t for t, _ in en_train_data), en_train_data, strict=True
    ):
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == entities
    assert (folder / "ddp" / "model-last" / "meta.json").is_file()


# Runs one rank as torchrun would start it, and saves the weights it ends with.
RANK_SCRIPT = """
import json, os, sys
from pathlib import Path
import numpy
from spacy_crf_ner.distributed import parameter_arrays, train_worker, worker_env
config, output, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
nlp = train_worker(config, output, overrides, worker_env(), timeout=60)
numpy.savez(output.parent / f"rank{os.environ['RANK']}.npz", **parameter_arrays(nlp))
"""


def train_two_ranks(config: Path, folder: Path, overrides: dict) -> list[dict[str, numpy.ndarray]]:
    """Train as two torchrun-style ranks; the weights each rank ends with."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RANK_SCRIPT,
                str(config),
                str(folder / "out"),
                json.dumps(overrides),
            ],
            env=torchrun_env(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    return [dict(numpy.load(folder / f"rank{rank}.npz")) for rank in range(2)]


def assert_identical(ranks: list[dict[str, numpy.ndarray]]) -> None:
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert numpy.array_equal(ranks[0][key], ranks[1][key]), key


@pytest.mark.slow
def test_ranks_hold_identical_weights_after_20_steps(tmp_path, en_train_data):
    config = write_setup(tmp_path, en_train_data, steps=20)
    ranks = train_two_ranks(config, tmp_path, {})
    assert_identical(ranks)
    initial = parameter_arrays(init_nlp(spacy.util.load_config(config)))
    assert max_difference(ranks[0], initial) > 1e-3


def read_until(stream, pattern: str, seconds: float) -> str:
    """Lines of ``stream`` up to one that matches ``pattern`` (or fail after ``seconds``)."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if re.match(pattern, line):
            return "".join(seen)
    raise AssertionError(f"no {pattern!r} in the output:\n{''.join(seen)}")


@pytest.mark.slow
def test_transformer_crf_ranks_hold_identical_weights(tmp_path, en_train_data, tiny_bert):
    corpus = write_corpus(tmp_path / "train.spacy", en_train_data)
    config = CONFIGS / "transformer_crf.cfg"
    overrides = {
        "paths.train": str(corpus),
        "paths.dev": str(corpus),
        "paths.transformer_model": str(tiny_bert),
        "training.max_steps": 4,
        "training.eval_frequency": 2,
        "training.optimizer.learn_rate.warmup_steps": 1,
        "training.optimizer.learn_rate.initial_rate": 0.01,
    }
    ranks = train_two_ranks(config, tmp_path, overrides)
    assert_identical(ranks)
    assert any(".bert." in key or "embeddings" in key for key in ranks[0]), list(ranks[0])[:20]
    initial = parameter_arrays(init_nlp(spacy.util.load_config(config, overrides=overrides)))
    assert max_difference(ranks[0], initial) > 1e-4


STEP_50 = r"\s*\d+\s+50\s"  # the logger's row of step 50: training is under way


@pytest.mark.slow
@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_dead_or_hung_worker_stops_the_other_within_the_timeout(tmp_path, en_train_data, how):
    """Rank 1 is killed (its connection closes: rank 0 notices at once) or stopped (it just
    stops answering: rank 0 gives up after the timeout)."""
    config = write_setup(tmp_path, en_train_data, steps=0)  # 0: no step limit
    port = free_port()
    timeout = 10
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spacy_crf_ner",
                "train",
                str(config),
                "--timeout",
                str(timeout),
                "--training.patience",
                "0",
                "--training.eval_frequency",
                "50",
            ],
            env=torchrun_env(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    try:
        read_until(procs[0].stdout, STEP_50, seconds=120)  # training runs: a logged step 50
        procs[1].send_signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        stopped_at = time.monotonic()
        procs[0].wait(timeout=timeout + 30)
        waited = time.monotonic() - stopped_at
        stderr = procs[0].stderr.read()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert procs[0].returncode == 1, stderr
    assert waited < timeout + 30
    assert "✘ Rank 0: the other workers did not answer" in stderr, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_the_launcher_stops_all_workers_when_one_dies(tmp_path, en_train_data):
    config = write_setup(tmp_path, en_train_data, steps=0)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "spacy_crf_ner", "train", str(config), "--workers", "2",
         "--timeout", "10", "--training.patience", "0", "--training.eval_frequency", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        read_until(launcher.stdout, STEP_50, seconds=120)
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[1]), signal.SIGKILL)
        launcher.wait(timeout=60)
        stderr = launcher.stderr.read()
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode == 1
    assert "✘ Worker 1 of 2 was killed by signal 9" in stderr, stderr
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
