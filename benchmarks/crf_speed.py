"""Side-by-side speed of ``spacy_crf_ner.crf.LinearChainCRF`` and pytorch-crf.

Both run in this process on the same random ragged batches with copied parameters. For each
shape it prints the median milliseconds of NLL forward+backward, decode and marginals (pytorch-crf
has no marginals) and the ratios. Run on an idle machine:

    python benchmarks/crf_speed.py --threads 1
    python benchmarks/crf_speed.py --device cuda

``--algorithms`` times our sequential and parallel scans side by side instead (pytorch-crf vs
sequential vs parallel, plus what ``"auto"`` picks), by default at the GPU shapes:

    python benchmarks/crf_speed.py --device cuda --algorithms
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from spacy_crf_ner.crf import LinearChainCRF

SHAPES = [(32, 30, 9), (32, 100, 17), (8, 512, 17), (256, 40, 9)]
GPU_SHAPES = [(32, 128, 17), (32, 512, 17), (256, 40, 9), (8, 4096, 9)]
ALGORITHM_HEADER = (
    "| B,T,K | pytorch-crf NLL f+b ms | sequential NLL f+b ms | parallel NLL f+b ms "
    "| pytorch-crf decode ms | sequential decode ms | parallel decode ms "
    "| sequential marginals ms | parallel marginals ms | auto picks |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


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


def make_pair(shape, device: str):
    """A random case and our CRF and pytorch-crf's with the same parameters."""
    from torchcrf import CRF

    batch, length, num_tags = shape
    emissions, mask, tags = make_case(batch, length, num_tags, device)
    ours = LinearChainCRF(num_tags).to(device)
    theirs = CRF(num_tags, batch_first=True).to(device)
    with torch.no_grad():
        theirs.transitions.copy_(ours.transitions)
        theirs.start_transitions.copy_(ours.start_transitions)
        theirs.end_transitions.copy_(ours.end_transitions)
    return emissions, mask, tags, ours, theirs


def bench_shape(shape, device: str, warmup: int, repeats: int) -> dict:

    emissions, mask, tags, ours, theirs = make_pair(shape, device)
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


def bench_algorithms(shape, device: str, warmup: int, repeats: int) -> dict:
    """Median ms of pytorch-crf and of our two algorithms at one ``(B, T, K)`` shape."""
    from spacy_crf_ner.crf import choose_algorithm

    emissions, mask, tags, ours, theirs = make_pair(shape, device)
    leaf = emissions.clone().requires_grad_(True)

    def time_it(fn):
        return median_ms(fn, device, warmup, repeats)

    row = {
        "shape": shape,
        "auto": choose_algorithm("auto", emissions),
        "nll_theirs": time_it(lambda: (-theirs(leaf, tags, mask)).backward()),
        "decode_theirs": time_it(lambda: theirs.decode(emissions, mask)),
    }
    for name in ("sequential", "parallel"):
        row[f"nll_{name}"] = time_it(
            lambda a=name: ours.nll(leaf, tags, mask, algorithm=a).backward()
        )
        row[f"decode_{name}"] = time_it(lambda a=name: ours.decode(emissions, mask, algorithm=a))
        row[f"marginals_{name}"] = time_it(
            lambda a=name: ours.marginals(emissions, mask, algorithm=a)
        )
    return row


def format_algorithm_row(row: dict) -> str:
    b, t, k = row["shape"]
    cells = [
        f"{row[key]:.2f}"
        for key in (
            "nll_theirs", "nll_sequential", "nll_parallel",
            "decode_theirs", "decode_sequential", "decode_parallel",
            "marginals_sequential", "marginals_parallel",
        )
    ]  # fmt: skip
    return f"| {b},{t},{k} | " + " | ".join(cells) + f" | {row['auto']} |"


def run(device: str, warmup: int, repeats: int, shapes=SHAPES) -> list[dict]:
    rows = []
    for shape in shapes:
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
    parser.add_argument(
        "--algorithms", action="store_true", help="pytorch-crf vs sequential vs parallel"
    )
    parser.add_argument(
        "--shapes", nargs="+", default=None, help="B,T,K triples (default: per table)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    print(
        f"# torch {torch.__version__}, device {args.device} ({name or platform.machine()}), "
        f"{args.threads} thread(s), median of {args.repeats} after {args.warmup} warm-up calls"
    )
    if args.algorithms:
        shapes = parse_shapes(args.shapes) if args.shapes else GPU_SHAPES
        print(ALGORITHM_HEADER)
        for shape in shapes:
            print(
                format_algorithm_row(
                    bench_algorithms(shape, args.device, args.warmup, args.repeats)
                ),
                flush=True,
            )
        return
    print(
        "| B,T,K | pytorch-crf NLL f+b ms | ours NLL f+b ms | NLL speed-up | pytorch-crf decode ms "
        "| ours decode ms | decode speed-up | ours marginals ms | marginals / our NLL |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    run(
        args.device, args.warmup, args.repeats, parse_shapes(args.shapes) if args.shapes else SHAPES
    )


def parse_shapes(values: list[str]) -> list[tuple[int, int, int]]:
    shapes = [tuple(int(v) for v in value.split(",")) for value in values]
    if any(len(shape) != 3 for shape in shapes):
        raise SystemExit("--shapes takes B,T,K triples, e.g. 32,128,17")
    return shapes


if __name__ == "__main__":
    main()
