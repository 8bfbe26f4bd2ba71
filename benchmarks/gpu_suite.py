"""The GPU suite (run by ``benchmarks/gpu_suite.sh``): one command, one markdown table.

1. ``pytest -m gpu``: parallel vs sequential vs CPU results, bf16 autocast;
2. ``crf_speed.py --algorithms``: pytorch-crf vs sequential vs parallel at the GPU shapes;
3. a transformer-CRF training step and inference (a tiny random BERT, bf16 autocast): step
   time and the CRF's share of it, per algorithm;
4. ``spacy train configs/bilstm_crf.cfg --gpu-id 0`` for 200 steps on a CoNLL-2003 slice
   (training words/s, dev evaluations included).

``--dry-run`` runs every step on the CPU with tiny sizes (the English sample in ``assets/``
instead of CoNLL), so that CI keeps the suite from rotting; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import crf_speed  # noqa: E402

from spacy_crf_ner.crf import LinearChainCRF  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn, device: str, warmup: int, repeats: int) -> float:
    return crf_speed.median_ms(fn, device, warmup, repeats)


def run_gpu_tests() -> list[tuple[str, str, str]]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:randomly", "-p",
           "no:cacheprovider", "tests/test_crf_parallel.py", "tests/test_crf.py"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else proc.stderr.strip()[-200:]
    print(proc.stdout[-3000:], file=sys.stderr)
    # 5: nothing collected/selected is not a failure of the suite in a dry run.
    status = "ok" if proc.returncode in (0, 5) else f"FAILED (exit {proc.returncode})"
    return [
        ("pytest -m gpu", "tests/test_crf_parallel.py, tests/test_crf.py", f"{status}: {summary}")
    ]


def run_crf_speed(device: str, shapes, warmup: int, repeats: int) -> list[tuple[str, str, str]]:
    rows = []
    for shape in shapes:
        r = crf_speed.bench_algorithms(shape, device, warmup, repeats)
        result = (
            f"NLL f+b {r['nll_theirs']:.2f} / {r['nll_sequential']:.2f} / "
            f"{r['nll_parallel']:.2f} ms; decode {r['decode_theirs']:.2f} / "
            f"{r['decode_sequential']:.2f} / {r['decode_parallel']:.2f} ms; marginals - / "
            f"{r['marginals_sequential']:.2f} / {r['marginals_parallel']:.2f} ms "
            f"(pytorch-crf / sequential / parallel); auto: {r['auto']}"
        )
        rows.append(("crf_speed", "B,T,K = {},{},{}".format(*shape), result))
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _tiny_bert(device: str):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=256, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    return BertModel(config).to(device)


def run_transformer(device: str, batch: int, length: int, warmup: int, repeats: int):
    """Training step and inference of BERT + linear + CRF under bf16 autocast: total ms and the
    CRF's share (the CRF timed alone on the same emissions)."""
    num_tags = 9
    bert = _tiny_bert(device)
    head = torch.nn.Linear(bert.config.hidden_size, num_tags).to(device)
    crf = LinearChainCRF(num_tags).to(device)
    params = [*bert.parameters(), *head.parameters(), *crf.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (batch, length), generator=gen).to(device)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).to(device)
    tags = torch.randint(0, num_tags, (batch, length), generator=gen).to(device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    def emissions():
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return head(bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state)

    rows = []
    for algorithm in ("sequential", "parallel"):

        def step(a=algorithm):
            optimizer.zero_grad()
            crf.nll(emissions(), tags, mask, algorithm=a).backward()
            optimizer.step()

        def infer(a=algorithm):
            with torch.no_grad():
                crf.decode(emissions(), mask, algorithm=a)

        with torch.no_grad():
            fixed = emissions()
        leaf = fixed.detach().requires_grad_(True)

        def crf_step(a=algorithm, leaf=leaf):
            crf.nll(leaf, tags, mask, algorithm=a).backward()

        def crf_infer(a=algorithm, fixed=fixed):
            crf.decode(fixed, mask, algorithm=a)

        step_ms = _median_ms(step, device, warmup, repeats)
        crf_ms = _median_ms(crf_step, device, warmup, repeats)
        infer_ms = _median_ms(infer, device, warmup, repeats)
        crf_infer_ms = _median_ms(crf_infer, device, warmup, repeats)
        setting = (
            f"tiny BERT + CRF, bf16 autocast, B={batch}, T={length}, K={num_tags}, {algorithm}"
        )
        result = (
            f"train step {step_ms:.2f} ms (CRF NLL f+b {crf_ms:.2f} ms, "
            f"{100 * crf_ms / step_ms:.0f}%); inference {infer_ms:.2f} ms (Viterbi "
            f"{crf_infer_ms:.2f} ms, {100 * crf_infer_ms / infer_ms:.0f}%)"
        )
        rows.append(("transformer-CRF", setting, result))
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _head(src: Path, dst: Path, sentences: int) -> None:
    """The first ``sentences`` sentences of a column file."""
    out, count = [], 0
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        out.append(line)
        if not line.strip():
            count += 1
            if count >= sentences:
                break
    dst.write_text("".join(out), encoding="utf-8")


def run_spacy_train(gpu_id: int, data_dir: Path, dry_run: bool, steps: int, work: Path):
    if dry_run:
        sources = [ROOT / "assets/en_sample/train.iob", ROOT / "assets/en_sample/dev.iob"]
        sentences = (60, 20)
    else:
        sources = [data_dir / "conll2003/eng.train", data_dir / "conll2003/eng.testa"]
        sentences = (4000, 500)
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        return [("spacy train", "configs/bilstm_crf.cfg", f"SKIPPED: missing {missing}")]
    inputs = []
    for src, name, count in zip(sources, ("train.iob", "dev.iob"), sentences, strict=True):
        _head(src, work / name, count)
        inputs.append(work / name)
    subprocess.run(
        [sys.executable, "-m", "spacy_crf_ner", "convert", *inputs, "--output-dir", work / "corpus",
         "--lang", "en", "--overwrite"], check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    log = work / "train.jsonl"
    env = {**os.environ, "BENCH_LOG": str(log)}
    eval_every = max(1, steps // 2)
    cmd = [
        sys.executable, "-m", "spacy", "train", ROOT / "configs/bilstm_crf.cfg",
        "--output", work / "model", "--gpu-id", str(gpu_id),
        "--paths.train", work / "corpus/train.iob.spacy",
        "--paths.dev", work / "corpus/dev.iob.spacy",
        "--training.max_steps", str(steps), "--training.eval_frequency", str(eval_every),
        "--code", ROOT / "benchmarks/bench_logger.py",
        "--training.logger", '{"@loggers":"spacy_crf_ner.bench_logger.v1"}',
    ]  # fmt: skip
    begin = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - begin
    print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
    setting = f"configs/bilstm_crf.cfg, --gpu-id {gpu_id}, {steps} steps, {sentences[0]} sentences"
    if proc.returncode != 0 or not log.exists():
        return [("spacy train", setting, f"FAILED (exit {proc.returncode})")]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    last = records[-1]
    score = last.get("score") or 0.0
    result = (
        f"{last['words'] / last['seconds']:.0f} words/s ({last['words']} words in "
        f"{last['seconds']:.1f} s, dev evaluations included; {wall:.0f} s with start-up); "
        f"dev score {score:.3f} at step {last['step']}"
    )
    return [("spacy train", setting, result)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (CI)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip", default="", help="comma-separated: tests,speed,transformer,train")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.dry_run:
        device, gpu_id = "cpu", -1
        shapes, warmup, repeats = [(2, 8, 3), (2, 33, 5)], 0, 1
        bert_shape, steps = (2, 16), 2
    else:
        if not torch.cuda.is_available():
            print("No CUDA device: run on a GPU machine, or pass --dry-run.", file=sys.stderr)
            return 1
        device, gpu_id = "cuda", 0
        shapes, warmup, repeats = crf_speed.GPU_SHAPES, 3, 20
        bert_shape, steps = (32, 256), 200
    name = (
        torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run: figures mean nothing)"
    )
    rows: list[tuple[str, str, str]] = []
    if "tests" not in skip:
        rows += run_gpu_tests()
    if "speed" not in skip:
        rows += run_crf_speed(device, shapes, warmup, repeats)
    if "transformer" not in skip:
        rows += run_transformer(device, *bert_shape, warmup, repeats)
    if "train" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            rows += run_spacy_train(gpu_id, args.data_dir, args.dry_run, steps, Path(tmp))
    print(f"\n# GPU suite: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| check | setting | result |\n|---|---|---|")
    for check, setting, result in rows:
        print(f"| {check} | {setting} | {re.sub(r'[|]', '/', result)} |")
    return 1 if any("FAILED" in r[2] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
