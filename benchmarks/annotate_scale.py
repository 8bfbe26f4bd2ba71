"""Throughput of ``annotate``: a plain ``nlp.pipe`` loop (``n_process`` 1 and 2) vs the local
engine (1 and 2 workers) vs Ray Data (2 actors), on short documents made of the shipped
sample's CoNLL sentences.

    python benchmarks/annotate_scale.py [--docs 50000] [--model DIR] [--modes pipe,local1,...]

``--modes local2,ray2`` compares the two engines alone (e.g. at 500,000 docs).

Each mode runs in its own subprocess (so that peak RSS is that mode's): wall time includes
loading the model and, for ``annotate``, hashing the inputs and writing the shards. Peak RSS
per worker is the main process's for ``pipe``/``local1``, the largest child's for ``pipe2``/
``local2`` (``RUSAGE_CHILDREN``), and the largest Ray actor's high-water mark (``VmHWM``) for
``ray2``.
For ``annotate`` modes it also prints where the time went (``Summary.phases``): starting Ray,
the first shard (workers start, load the pipeline, annotate one shard), the steady state (the
later shards: docs/s without fixed costs) and stopping Ray, so that Ray's per-document overhead
is seen apart from its fixed costs; and CPU seconds by process (``cpu_s``: the driver, the
local workers, and for Ray the actors, the input reader, raylet, GCS and other Ray processes,
sampled once a second, so up to a second of a process's last CPU may be missed).
Without ``--model``, a crf_ner with the factory's default (BiLSTM) model is trained for a few
steps on the sample (its accuracy does not matter for speed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("pipe", "pipe2", "local1", "local2", "ray2", "ray2warm")


def conll_sentences() -> list[tuple[str, list[tuple[int, int, str]]]]:
    """(text, entities) of every sentence of the sample's train and dev IOB files."""
    out = []
    for name in ("train.iob", "dev.iob"):
        words: list[tuple[str, str]] = []
        lines = (ROOT / "assets" / "en_sample" / name).read_text(encoding="utf8").splitlines()
        for line in [*lines, ""]:
            if line.strip() and not line.startswith("-DOCSTART-"):
                words.append((line.split()[0], line.split()[-1]))
                continue
            if words:
                text, ents, pos, cur = "", [], 0, None
                for word, tag in words:
                    start = len(text) + (1 if text else 0)
                    text = f"{text} {word}" if text else word
                    if tag.startswith("B-") or (tag.startswith("I-") and cur is None):
                        cur = [start, start + len(word), tag[2:]]
                        ents.append(cur)
                    elif tag.startswith("I-") and cur is not None:
                        cur[1] = start + len(word)
                    else:
                        cur = None
                    pos += 1
                out.append((text, [tuple(e) for e in ents]))
            words = []
    return out


def train_model(path: Path) -> None:
    import spacy
    from spacy.training import Example

    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner")
    data = conll_sentences()[:200]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(path)


TICKS = os.sysconf("SC_CLK_TCK")


def ray_category(cmdline: bytes) -> str | None:
    """Which part of a Ray run a process is (by its command line), or None if not Ray's. A
    worker's command line changes (``ray::IDLE``, then its actor), so it is read each time."""
    program = cmdline.split(b"\0", 1)[0]
    if program.endswith(b"/raylet"):
        return "raylet"
    if program.endswith(b"/gcs_server"):
        return "gcs"
    if b"RayAnnotator" in cmdline:
        return "actors"
    if b"InputFeed" in cmdline:
        return "input_feed"
    return "ray_other" if b"ray::" in cmdline or b"/ray/" in cmdline else None


def proc_stat(pid: str) -> tuple[int, int]:
    """(CPU ticks used, start time in ticks since boot) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[19])


def ray_sampler(stop: threading.Event, peak: dict[str, int], cpu: dict[str, float]) -> None:
    """Every second: the largest VmHWM (kB) of any Ray actor running the pipeline (a
    high-water mark: the peak is kept between samples) and the CPU time of every Ray process
    started after this one (actors, input reader, raylet, GCS, other Ray workers), less what
    it had used when sampling began. Once a second: scanning /proc costs the driver CPU that
    the Ray modes are charged for."""
    _, own_start = proc_stat(str(os.getpid()))
    seen: dict[str, tuple[str, int, int]] = {}  # pid: (category, first ticks, last ticks)
    first = True
    while True:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ticks, started = proc_stat(entry.name)
                if started < own_start:
                    continue
                name = ray_category((entry / "cmdline").read_bytes())
                if name is None:
                    continue
                base = seen[entry.name][1] if entry.name in seen else (ticks if first else 0)
                seen[entry.name] = (name, base, ticks)
                if name == "actors":
                    for line in (entry / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak["kb"] = max(peak.get("kb", 0), int(line.split()[1]))
            except (OSError, ValueError, IndexError):
                continue
        first = False
        cpu.clear()
        for name, base, last in seen.values():
            cpu[name] = cpu.get(name, 0.0) + (last - base) / TICKS
        if stop.wait(1.0):
            return


def run_mode(mode: str, model: str, data: str, n_docs: int) -> dict:
    """One measurement, in this (fresh) process."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from spacy_crf_ner.annotate import Settings, annotate

    if mode == "ray2warm":  # a Ray runtime already up (``--ray-address``): not timed
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")  # fmt: skip
    peak: dict[str, int] = {}
    ray_cpu: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=ray_sampler, args=(stop, peak, ray_cpu), daemon=True)
    if mode.startswith("ray"):
        sampler.start()
    began = time.perf_counter()
    cpu_began = resource.getrusage(resource.RUSAGE_SELF)
    if mode in ("pipe", "pipe2"):
        from spacy_crf_ner.loaders import load_pipeline

        nlp = load_pipeline(model)
        texts = (json.loads(line)["text"] for line in open(data, encoding="utf8"))
        n = sum(1 for _ in nlp.pipe(texts, n_process=2 if mode == "pipe2" else 1))
        assert n == n_docs
    else:
        workers = int(mode.removesuffix("warm")[-1])
        engine = "ray" if mode.startswith("ray") else "local"
        with tempfile.TemporaryDirectory() as out:
            settings = Settings(engine=engine, workers=workers, progress=False)
            summary = annotate(model, [data], Path(out) / "run", settings)
            assert summary.docs == n_docs
        phases = summary.phases
    seconds = time.perf_counter() - began
    stop.set()
    if sampler.is_alive():
        sampler.join()
    self_used = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = {"driver": self_used.ru_utime + self_used.ru_stime
             - cpu_began.ru_utime - cpu_began.ru_stime}  # fmt: skip
    if mode in ("local2", "pipe2"):
        cpu_s["workers"] = children.ru_utime + children.ru_stime
    cpu_s.update(ray_cpu)
    if mode == "ray2warm":
        ray.shutdown()
    if mode in ("pipe", "local1"):
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elif mode in ("local2", "pipe2"):
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    else:
        rss_kb = peak.get("kb", 0)
    result = {"mode": mode, "seconds": round(seconds, 2),
              "docs_per_s": round(n_docs / seconds, 1),
              "peak_rss_mb_per_worker": round(rss_kb / 1024, 1),
              "cpu_s": {k: round(v, 1) for k, v in cpu_s.items()}}  # fmt: skip
    if mode not in ("pipe", "pipe2"):
        steps = ("engine_start", "first_shard", "steady", "engine_stop")
        before = summary.seconds - sum(phases.get(k, 0.0) for k in steps)
        result["phases_s"] = {
            "before_engine": round(before, 2),
            **{k: round(phases.get(k, 0.0), 2) for k in steps},
        }
        steady = phases.get("steady", 0.0)
        rate = phases.get("steady_docs", 0) / steady if steady else None
        result["steady_docs_per_s"] = round(rate, 1) if rate else None
        if "workers_used" in phases:  # Ray: did every actor get work?
            result["actors_used"] = int(phases["workers_used"])
            result["busiest_actor_share"] = round(phases["busiest_worker_share"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--modes", default=",".join(MODES), help=f"Any of {', '.join(MODES)}.")
    parser.add_argument("--one", nargs=3, metavar=("MODE", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.modes.split(",")) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.one:
        mode, model, data = args.one
        print(json.dumps(run_mode(mode, model, data, args.docs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "model")
            train_model(Path(model))
        sentences = [text for text, _ in conll_sentences()]
        data = Path(tmp) / "docs.jsonl"
        with data.open("w", encoding="utf8") as stream:
            for i in range(args.docs):
                stream.write(json.dumps({"id": i, "text": sentences[i % len(sentences)]}) + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        results = {}
        for mode in args.modes.split(","):
            one = ["--one", mode, model, str(data)]
            proc = subprocess.run(
                [sys.executable, __file__, "--docs", str(args.docs), *one],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            if proc.returncode:
                print(f"{mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(results[mode]), flush=True)
    if "local1" in results and "local2" in results:
        speedup = results["local2"]["docs_per_s"] / results["local1"]["docs_per_s"]
        print(f"local 2 workers / 1 worker: {speedup:.2f}x (efficiency {speedup / 2:.0%})")
    for ray_mode in ("ray2", "ray2warm"):
        if "local2" not in results or ray_mode not in results:
            continue
        local2, ray2 = results["local2"], results[ray_mode]
        slower = local2["docs_per_s"] / ray2["docs_per_s"] - 1
        print(f"{ray_mode} vs local2: {slower:+.1%} time (wall, fixed costs included)")
        if local2.get("steady_docs_per_s") and ray2.get("steady_docs_per_s"):
            steady = local2["steady_docs_per_s"] / ray2["steady_docs_per_s"] - 1
            print(f"{ray_mode} vs local2, steady state: {steady:+.1%} time per doc")
            fixed = {m: results[m]["seconds"] - args.docs / results[m]["steady_docs_per_s"]
                     for m in ("local2", ray_mode)}  # fmt: skip
            print(
                f"fixed costs (wall - docs / steady rate): local2 {fixed['local2']:.1f} s, "
                f"{ray_mode} {fixed[ray_mode]:.1f} s"
            )
    if "pipe" in results and "pipe2" in results:
        ratio = results["pipe2"]["docs_per_s"] / results["pipe"]["docs_per_s"]
        print(f"nlp.pipe n_process=2 / n_process=1: {ratio:.2f}x")
    if "pipe" in results and "local1" in results:
        ratio = results["local1"]["docs_per_s"] / results["pipe"]["docs_per_s"]
        print(f"local 1 worker / plain nlp.pipe loop: {ratio:.2f}x")


if __name__ == "__main__":
    main()
