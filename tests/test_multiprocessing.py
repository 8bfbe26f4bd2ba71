"""``nlp.pipe(n_process=2)`` with crf_ner: no hang with fork or spawn, the same entities and
probabilities as ``n_process=1``, and one torch thread per worker unless the user says
otherwise (``SPACY_CRF_NER_THREADS``).

Each run is a separate Python process, started without any OMP_*/MKL_* variable (the test
session sets OMP_NUM_THREADS=1, which hid the hang), killed with its workers if it does not
finish in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from spacy.lang.en import English
from spacy.training import Example
from spacy.util import fix_random_seed

from spacy_crf_ner.threads import (
    THREADS_ENV,
    inference_threads,
    set_inference_threads,
    torch_threads,
)

TIMEOUT = 180  # seconds; a hung run never finishes, a working one takes ~5-20 s

# Runs nlp.pipe over 4 x repeats short texts with n_process=1 and then n_process=2 and prints a
# summary of both. Before that, the parent runs torch on two threads, as training, a
# transformer component or any torch code in the same process does: that is what leaves
# GNU OpenMP with a thread pool that a forked child does not get.
SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, sys
    import spacy, torch
    from spacy.language import Language
    from spacy.tokens import Doc

    if not Doc.has_extension("torch_threads"):
        Doc.set_extension("torch_threads", default=None)


    @Language.component("record_threads")
    def record_threads(doc):
        doc._.torch_threads = torch.get_num_threads()
        return doc


    def summary(docs):
        return [
            {
                "ents": [(e.start, e.end, e.label_, e._.crf_prob) for e in doc.ents],
                "path_prob": doc._.crf_path_prob,
                "candidates": [(s.start, s.end, s.label_) for s in doc.spans["crf_ner_candidates"]],
                "scores": list(doc.spans["crf_ner_candidates"].attrs["scores"]),
                "threads": doc._.torch_threads,
            }
            for doc in docs
        ]


    if __name__ == "__main__":
        method, model, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
        multiprocessing.set_start_method(method, force=True)
        settings = {"entity_probs": True, "candidate_threshold": 0.2}
        nlp = spacy.load(model, config={"components": {"crf_ner": settings}})
        nlp.add_pipe("record_threads")
        texts = [
            "Angela Merkel visited London and Paris.",
            "Who is Shaka Khan?",
            "Apple bought a small startup in Berlin last May.",
            "The weather was nice in New York City.",
        ] * repeats
        torch.set_num_threads(2)
        x = torch.randn(1024, 1024)
        (x @ x).sum()
        one = summary(nlp.pipe(texts, batch_size=25))
        two = summary(nlp.pipe(texts, batch_size=25, n_process=2))
        print(json.dumps({
            "docs": len(two),
            "same": [{**d, "threads": None} for d in one] == [{**d, "threads": None} for d in two],
            "first": [one[0], two[0]],
            "main_threads": sorted({d["threads"] for d in one}),
            "worker_threads": sorted({d["threads"] for d in two}),
            "n_ents": sum(len(d["ents"]) for d in two),
        }))
    """
)


# The small BiLSTM of the other tests (conftest's ``small_model`` is per test; this model is
# trained once per module).
SMALL_MODEL = {
    "@architectures": "spacy_crf_ner.CRFTagger.v1",
    "tok2vec": {
        "@architectures": "spacy_crf_ner.BiLSTMEncoder.v1",
        "width": 32,
        "embed_size": 500,
        "char_features": 8,
        "lstm_width": 32,
    },
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, en_train_data) -> Path:
    """A small crf_ner overfitted on a few docs, saved to disk."""
    fix_random_seed(0)
    nlp = English()
    nlp.add_pipe("crf_ner", config={"model": SMALL_MODEL})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in en_train_data]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer)
    path = tmp_path_factory.mktemp("mp") / "model"
    nlp.to_disk(path)
    return path


def run_pipe(
    tmp_path: Path, model: Path, method: str, threads: str | None = None, repeats: int = 100
) -> dict:
    """Run SCRIPT in a fresh process without thread variables; kill it and its workers if
    it does not finish within TIMEOUT."""
    script = tmp_path / "run_pipe.py"
    script.write_text(SCRIPT)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_")) and key != THREADS_ENV
    }
    if threads is not None:
        env[THREADS_ENV] = threads
    proc = subprocess.Popen(
        [sys.executable, str(script), method, str(model), str(repeats)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"nlp.pipe(n_process=2) with {method} did not finish in {TIMEOUT} s")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_n_process_2_gives_the_entities_of_n_process_1(tmp_path, model_dir, method):
    result = run_pipe(tmp_path, model_dir, method)
    assert result["docs"] == 400 and result["n_ents"] > 0
    assert result["same"], result["first"]
    assert result["worker_threads"] == [1]
    assert result["main_threads"] == [2]  # crf_ner restores the parent's torch setting


@pytest.mark.slow
def test_spawned_workers_use_the_threads_the_user_sets(tmp_path, model_dir):
    # 40 texts, two batches of 25: one for each worker (two workers of two threads each on
    # CI's two cores made the 400 texts of the test above take a minute).
    result = run_pipe(tmp_path, model_dir, "spawn", threads="2", repeats=10)
    assert result["docs"] == 40
    assert result["same"], result["first"]
    assert result["worker_threads"] == [2]


def test_predict_runs_on_the_inference_threads_and_restores_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch.set_num_threads(2)
    try:
        with torch_threads():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "0")  # leave torch alone
        with torch_threads():
            assert torch.get_num_threads() == 2
        set_inference_threads(3)  # written to the environment, for workers started later
        assert os.environ[THREADS_ENV] == "3" and inference_threads() == 3
        with torch_threads():
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_invalid_thread_setting(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=THREADS_ENV):
        inference_threads()
    with pytest.raises(ValueError, match="non-negative"):
        set_inference_threads(-1)
