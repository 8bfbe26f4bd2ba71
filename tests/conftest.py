"""Test-session settings shared by every test module."""

import os

# Small models run fastest on one thread, and two torch/OpenMP jobs with two threads each on
# a 2-core machine can be 30x slower (oversubscription). Subprocesses (spacy train, the CLI)
# inherit this; in-process torch is set below.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never download anything: transformers and the hub must stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
