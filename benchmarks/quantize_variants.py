"""Which onnxruntime int8 quantisation makes an exported transformer fastest, and how exact?

Takes the fp32 ``transformer.onnx`` that ``python -m spacy_crf_ner export`` writes for a
transformer-CRF, quantises it in several ways, and runs each on the same batch of windows (token
ids drawn at random: speed and the error of the hidden states do not need real text) on one
thread, interleaved, so that all variants see the same machine load. Prints the median time of
each as a ratio to fp32 and the max / mean absolute difference of its hidden states from fp32.
What ``export --int8`` uses (dynamic, per channel) was chosen from this table (BENCHMARKS.md §10).

    python benchmarks/quantize_variants.py EXPORT/crf_ner/transformer.onnx --pieces 180
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def dynamic(src: Path, dst: Path, **options) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     **options)  # fmt: skip


def fused_dynamic(src: Path, dst: Path, heads: int, hidden: int) -> None:
    """onnxruntime's transformer optimiser (fused Attention, SkipLayerNorm, BiasGelu), then
    dynamic quantisation (QAttention)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = dst.with_suffix(".fused.onnx")
    optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden,
                   opt_level=1).save_model_to_file(str(fused))  # fmt: skip
    quantize_dynamic(
        fused, dst, weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1}
    )


def static(src: Path, dst: Path, batches: list[dict], quant_format) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    prepared = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    quantize_static(prepared, dst, Reader(), quant_format=quant_format,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"])  # fmt: skip


def weight_only(src: Path, dst: Path, bits: int) -> None:
    """``MatMulNBits`` (block-wise weight-only, int8 compute: ``accuracy_level`` 4); needs the
    ``onnx-ir`` package, which the project does not install."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4,
                                          bits=bits)  # fmt: skip
    quantizer = MatMulNBitsQuantizer(onnx.load(src), bits=bits, block_size=32, is_symmetric=True,
                                     accuracy_level=4, algo_config=config)  # fmt: skip
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("graph", type=Path, help="an fp32 transformer.onnx from export")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--pieces", type=int, default=180)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=384)
    args = parser.parse_args()

    import numpy
    import onnxruntime
    from onnxruntime.quantization import QuantFormat

    logging.getLogger().setLevel(logging.ERROR)
    rng = numpy.random.default_rng(0)

    def batch(windows: int) -> dict:
        ids = rng.integers(1000, 30000, size=(windows, args.pieces)).astype(numpy.int64)
        mask = numpy.ones_like(ids)
        mask[::3, args.pieces - 30 :] = 0  # some shorter windows, as at a doc's end
        return {"input_ids": ids, "attention_mask": mask}

    work = Path(tempfile.mkdtemp(prefix="quantize-variants-"))
    calibration = [batch(8) for _ in range(3)]
    makers = {
        "dynamic, per matrix": lambda d: dynamic(args.graph, d),
        "dynamic, per channel": lambda d: dynamic(args.graph, d, per_channel=True),
        "dynamic, MatMulConstBOnly": lambda d: dynamic(
            args.graph, d, extra_options={"MatMulConstBOnly": True}
        ),
        "fused, then dynamic": lambda d: fused_dynamic(args.graph, d, args.heads, args.hidden),
        "static QDQ": lambda d: static(args.graph, d, calibration, QuantFormat.QDQ),
        "static QOperator": lambda d: static(args.graph, d, calibration, QuantFormat.QOperator),
    }
    try:
        import onnx_ir  # noqa: F401
    except ImportError:
        print("onnx-ir is not installed: the MatMulNBits variants are left out")
    else:
        for bits in (8, 4):
            makers[f"MatMulNBits {bits} bits"] = lambda d, b=bits: weight_only(args.graph, d, b)
    paths = {"fp32": args.graph}
    for i, (name, make) in enumerate(makers.items()):
        paths[name] = work / f"variant{i}.onnx"
        make(paths[name])

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {
        name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in paths.items()
    }
    inputs = batch(args.windows)
    keep = inputs["attention_mask"].astype(bool)
    reference = sessions["fp32"].run(None, inputs)[0]
    errors = {}
    for name, session in sessions.items():
        diff = numpy.abs(session.run(None, inputs)[0] - reference)[keep]
        errors[name] = (float(diff.max()), float(diff.mean()))
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.repeats):
        for name, session in sessions.items():
            begin = time.perf_counter()
            session.run(None, inputs)
            times[name].append(time.perf_counter() - begin)
    base = float(numpy.median(times["fp32"]))
    print(f"\n{args.windows} windows x {args.pieces} pieces, one thread, median of {args.repeats}")
    print("| variant | median s | fp32 / variant | hidden-state error max / mean |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        median = float(numpy.median(runs))
        print(f"| {name} | {median:.3f} | {base / median:.2f}× "
              f"| {errors[name][0]:.3f} / {errors[name][1]:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
