"""Side-by-side speed of ``spacy_crf_ner.crf.LinearChainCRF`` and pytorch-crf.

Both run in this process on the same random ragged batches with copied parameters. For each
shape it prints the median milliseconds of NLL forward+backward, decode and marginals (pytorch-crf
has no marginals) and the ratios. Run on an idle machine:

    python benchmarks/crf_speed.py --threads 1
    python benchmarks/crf_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from spacy_crf_ner.crf import LinearChainCRF

SHAPES = [(32, 30, 9), (32, 100, 17), (8, 512, 17), (256, 40, 9)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(fn, device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        begin = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def make_case(batch: int, length: int, tags: int, device: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, length, tags, generator=generator)
    # Ragged lengths between half and the full length; the first sequence is full length
    # (pytorch-crf requires the first time step to be unmasked for every sequence).
    lengths = torch.randint(max(1, length // 2), length + 1, (batch,), generator=generator)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    tags_ = torch.randint(0, tags, (batch, length), generator=generator)
    return emissions.to(device), mask.to(device), tags_.to(device)


def bench_shape(shape, device: str, warmup: int, repeats: int) -> dict:
    from torchcrf import CRF

    batch, length, num_tags = shape
    emissions, mask, tags = make_case(batch, length, num_tags, device)
    ours = LinearChainCRF(num_tags).to(device)
    theirs = CRF(num_tags, batch_first=True).to(device)
    with torch.no_grad():
        theirs.transitions.copy_(ours.transitions)
        theirs.start_transitions.copy_(ours.start_transitions)
        theirs.end_transitions.copy_(ours.end_transitions)
    leaf = emissions.clone().requires_grad_(True)

    def ours_nll():
        ours.nll(leaf, tags, mask).backward()

    def theirs_nll():
        (-theirs(leaf, tags, mask)).backward()

    def time_it(fn):
        return median_ms(fn, device, warmup, repeats)

    return {
        "shape": shape,
        "nll_theirs": time_it(theirs_nll),
        "nll_ours": time_it(ours_nll),
        "decode_theirs": time_it(lambda: theirs.decode(emissions, mask)),
        "decode_ours": time_it(lambda: ours.decode(emissions, mask)),
        "marginals_ours": time_it(lambda: ours.marginals(emissions, mask)),
    }


def run(device: str, warmup: int, repeats: int) -> list[dict]:
    rows = []
    for shape in SHAPES:
        rows.append(bench_shape(shape, device, warmup, repeats))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    b, t, k = row["shape"]
    return (
        f"| {b},{t},{k} | {row['nll_theirs']:.2f} | {row['nll_ours']:.2f} | "
        f"{row['nll_theirs'] / row['nll_ours']:.2f}x | {row['decode_theirs']:.2f} | "
        f"{row['decode_ours']:.2f} | {row['decode_theirs'] / row['decode_ours']:.2f}x | "
        f"{row['marginals_ours']:.2f} | {row['marginals_ours'] / row['nll_ours']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    print(
        f"# torch {torch.__version__}, device {args.device} ({name or platform.machine()}), "
        f"{args.threads} thread(s), median of {args.repeats} after {args.warmup} warm-up calls"
    )
    print(
        "| B,T,K | pytorch-crf NLL f+b ms | ours NLL f+b ms | NLL speed-up | pytorch-crf decode ms "
        "| ours decode ms | decode speed-up | ours marginals ms | marginals / our NLL |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    run(args.device, args.warmup, args.repeats)


if __name__ == "__main__":
    main()
