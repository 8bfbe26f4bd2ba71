"""The linear-chain CRF as ONNX graphs: constrained Viterbi and forward-backward.

The graphs are written node by node with ``onnx.helper`` (no torch, no tracing): a padded
batch ``emissions (B, T, K)`` with per-sequence ``lengths (B,)``, both axes dynamic, runs
through ONNX ``Loop`` nodes over time, so any onnxruntime (C#, Java, JS, Python) gets the
best tag paths from one graph. The constraints of the tag scheme are baked in as -inf
transition, start and end scores; the scans run in float64, so a path's score and log Z
keep their digits on long sequences.

* ``add_viterbi`` appends the decode: ``paths (B, T)`` int64 (-1 at padding, and for a
  sequence with no allowed path) and ``scores (B,)`` float64, the best path's score.
* ``add_forward_backward`` appends log Z and the forward and backward vectors that exact
  entity probabilities are read from (``onnx_pipe.span_probabilities``).

The time axis is padded by one step inside the graph, so every ``Loop`` runs at least once
(a zero-trip ``Loop`` gives scan outputs without a shape in some runtimes).
"""

from __future__ import annotations

from typing import Any

import numpy

MIN_OPSET = 17  # LayerNormalization (the encoder graph) is opset 17
NEG_INF = float("-inf")


class GraphBuilder:
    """Collects the nodes and initializers of one (sub)graph under unique names."""

    def __init__(self, opset: int, prefix: str = "") -> None:
        if opset < MIN_OPSET:
            raise ValueError(
                f"opset {opset} is too old: the graphs need opset {MIN_OPSET} or newer"
            )
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: Any, hint: str = "const", dtype: str | None = None) -> str:
        from onnx import numpy_helper

        array = numpy.asarray(value, dtype=dtype)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any:
        """Add a node; its output name (or names, when ``n_out > 1``)."""
        from onnx import helper

        outputs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return outputs[0] if n_out == 1 else outputs

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 0) -> str:
        """A Reduce* node, with ``axes`` as an input or an attribute as the opset wants."""
        takes_input = op_type == "ReduceSum" or self.opset >= 18
        if takes_input:
            return self.op(op_type, [x, self.const(axes, "axes", "int64")], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(axes, "axes", "int64")])

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", [x, self.const(axes, "axes", "int64")])

    def logsumexp(self, x: str, axis: int, keepdims: int = 0) -> str:
        """log(sum(exp(x))) over ``axis``, -inf where every entry is -inf (never NaN)."""
        top = self.reduce("ReduceMax", x, [axis], keepdims=1)
        finite = self.op("Not", [self.op("IsInf", [top])])
        safe = self.op("Where", [finite, top, self.const(0.0, "zero", "float64")])
        summed = self.reduce("ReduceSum", self.op("Exp", [self.op("Sub", [x, safe])]), [axis], 1)
        out = self.op("Add", [self.op("Log", [summed]), safe])
        return out if keepdims else self.squeeze(out, [axis])

    def subgraph(self) -> GraphBuilder:
        return GraphBuilder(self.opset, prefix=self.name("body") + "/")


def masked_params(
    transitions: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
    constraints: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray] | None,
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """The CRF scores in float64 with every forbidden move set to -inf."""
    params = [numpy.asarray(p, dtype="float64") for p in (transitions, start, end)]
    if constraints is None:
        return params[0], params[1], params[2]
    masked = [
        numpy.where(numpy.asarray(allowed, dtype=bool), p, NEG_INF)
        for p, allowed in zip(params, constraints, strict=True)
    ]
    return masked[0], masked[1], masked[2]


def _time_major(g: GraphBuilder, emissions: str) -> tuple[str, str]:
    """Emissions as float64 ``(T + 1, B, K)`` (one padding step) and ``T + 1`` (int64)."""
    em = g.op("Cast", [emissions], to=11)  # DOUBLE
    pads = g.const([0, 0, 0, 0, 1, 0], "pads", "int64")
    em = g.op("Pad", [em, pads, g.const(0.0, "zero", "float64")])
    em = g.op("Transpose", [em], perm=[1, 0, 2])
    length = g.op("Gather", [g.op("Shape", [emissions]), g.const(1, "one", "int64")], axis=0)
    return em, g.op("Add", [length, g.const(1, "one", "int64")])


def _reverse_time(g: GraphBuilder, x: str) -> str:
    """``x[::-1]`` along axis 0 (a Slice with step -1)."""
    return g.op(
        "Slice",
        [
            x,
            g.const([-1], "starts", "int64"),
            g.const([numpy.iinfo(numpy.int64).min], "ends", "int64"),
            g.const([0], "axes", "int64"),
            g.const([-1], "steps", "int64"),
        ],
    )


def _active(g: GraphBuilder, t: str, lengths: str) -> str:
    """(B, 1) bool: position ``t`` lies inside the sequence."""
    return g.unsqueeze(g.op("Less", [t, lengths]), [1])


def add_viterbi(
    g: GraphBuilder,
    emissions: str,
    lengths: str,
    transitions: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> tuple[str, str]:
    """Append the Viterbi decode of ``emissions (B, T, K)`` (float) under the given (masked,
    float64) scores; returns the names of ``paths (B, T)`` int64 and ``scores (B,)`` float64.
    """
    from onnx import TensorProto, helper

    num_tags = transitions.shape[0]
    em, steps = _time_major(g, emissions)
    trans = g.const(transitions, "transitions", "float64")
    first = g.op("Gather", [em, g.const(0, "zero_i", "int64")], axis=0)
    score0 = g.op("Add", [first, g.const(start, "start", "float64")])
    identity = g.const(numpy.arange(num_tags)[None, :], "identity", "int64")
    trips = g.op("Sub", [steps, g.const(1, "one", "int64")])

    # Forward: the best score of a prefix ending in each tag; backpointers as scan outputs.
    body = g.subgraph()
    t = body.op("Add", ["fw_iter", body.const(1, "one", "int64")])
    e_t = body.op("Gather", [em, t], axis=0)
    cand = body.op("Add", [body.unsqueeze("fw_score_in", [2]), trans])  # (B, K, K)
    best = body.op("Add", [body.reduce("ReduceMax", cand, [1]), e_t])
    pointer = body.op("ArgMax", [cand], axis=1, keepdims=0)
    active = _active(body, t, lengths)
    body.nodes.append(helper.make_node("Identity", ["fw_cond_in"], ["fw_cond_out"]))
    body.nodes.append(helper.make_node("Where", [active, best, "fw_score_in"], ["fw_score_out"]))
    body.nodes.append(helper.make_node("Where", [active, pointer, identity], ["fw_pointer"]))
    forward = helper.make_graph(
        body.nodes,
        g.name("viterbi_forward"),
        [
            helper.make_tensor_value_info("fw_iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("fw_cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("fw_score_in", TensorProto.DOUBLE, None),
        ],
        [
            helper.make_tensor_value_info("fw_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("fw_score_out", TensorProto.DOUBLE, None),
            helper.make_tensor_value_info("fw_pointer", TensorProto.INT64, None),
        ],
        body.initializers,
    )
    true = g.const(True, "true", "bool")
    final, pointers = g.op("Loop", [trips, true, score0], n_out=2, body=forward)
    final = g.op("Add", [final, g.const(end, "end", "float64")])
    last_tag = g.op("ArgMax", [final], axis=1, keepdims=0)  # (B,)
    scores = g.reduce("ReduceMax", final, [1])

    # Backtrack from the last step; padding steps point to themselves.
    body = g.subgraph()
    t = body.op("Sub", [trips, "bt_iter"])  # T, ..., 1 (pointers[t - 1] leads into t - 1)
    step = body.op("Gather", [pointers, body.op("Sub", [t, body.const(1, "one", "int64")])], axis=0)
    prev = body.op("GatherElements", [step, body.unsqueeze("bt_tag_in", [1])], axis=1)
    body.nodes.append(helper.make_node("Identity", ["bt_cond_in"], ["bt_cond_out"]))
    body.nodes.append(helper.make_node("Squeeze", [prev, body.const([1], "axes", "int64")],
                                       ["bt_tag_out"]))  # fmt: skip
    body.nodes.append(helper.make_node("Identity", ["bt_tag_out"], ["bt_tag_scan"]))
    backward = helper.make_graph(
        body.nodes,
        g.name("viterbi_backtrack"),
        [
            helper.make_tensor_value_info("bt_iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("bt_cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("bt_tag_in", TensorProto.INT64, None),
        ],
        [
            helper.make_tensor_value_info("bt_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("bt_tag_out", TensorProto.INT64, None),
            helper.make_tensor_value_info("bt_tag_scan", TensorProto.INT64, None),
        ],
        body.initializers,
    )
    _, earlier = g.op("Loop", [trips, true, last_tag], n_out=2, body=backward)
    reversed_tags = g.op("Concat", [g.unsqueeze(last_tag, [0]), earlier], axis=0)  # T, ..., 0
    tags = g.op("Transpose", [_reverse_time(g, reversed_tags)], perm=[1, 0])  # (B, T+1)
    width = g.op("Shape", [emissions], start=1, end=2)
    tags = g.op(
        "Slice", [tags, g.const([0], "zero_1", "int64"), width, g.const([1], "ax", "int64")]
    )
    positions = g.op("Range", [g.const(0, "zero_i", "int64"), g.squeeze(width, [0]),
                               g.const(1, "one", "int64")])  # fmt: skip
    inside = g.op("Less", [g.unsqueeze(positions, [0]), g.unsqueeze(lengths, [1])])
    possible = g.unsqueeze(g.op("Not", [g.op("IsInf", [scores])]), [1])
    keep = g.op("And", [inside, possible])
    paths = g.op("Where", [keep, tags, g.const(-1, "minus_one", "int64")])
    # An empty sequence has the empty path and score 0, as in crf.viterbi.
    nonempty = g.op("Greater", [lengths, g.const(0, "zero_i", "int64")])
    scores = g.op("Where", [nonempty, scores, g.const(0.0, "zero", "float64")])
    return paths, scores


def add_forward_backward(
    g: GraphBuilder,
    emissions: str,
    lengths: str,
    temperature: str,
    transitions: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> tuple[str, str, str]:
    """Append forward-backward over ``emissions / temperature`` under the (masked, float64)
    scores divided by ``temperature`` (a float64 scalar input).

    Returns the names of ``alpha (B, T, K)`` (log forward vectors, emission at t included),
    ``beta_emit (B, T, K)`` (log backward vectors plus the emission at t) and ``log_z (B,)``,
    all float64 (0 for empty sequences' log Z).
    """
    from onnx import TensorProto, helper

    em, steps = _time_major(g, emissions)
    em = g.op("Div", [em, temperature])
    trans = g.op("Div", [g.const(transitions, "transitions", "float64"), temperature])
    start_t = g.op("Div", [g.const(start, "start", "float64"), temperature])
    end_t = g.op("Div", [g.const(end, "end", "float64"), temperature])
    one = g.const(1, "one", "int64")
    trips = g.op("Sub", [steps, one])
    true = g.const(True, "true", "bool")
    alpha0 = g.op("Add", [g.op("Gather", [em, g.const(0, "zero_i", "int64")], axis=0), start_t])

    body = g.subgraph()
    t = body.op("Add", ["fa_iter", body.const(1, "one", "int64")])
    e_t = body.op("Gather", [em, t], axis=0)
    cand = body.op("Add", [body.unsqueeze("fa_alpha_in", [2]), trans])
    alpha = body.op("Add", [body.logsumexp(cand, 1), e_t])
    body.nodes.append(helper.make_node("Identity", ["fa_cond_in"], ["fa_cond_out"]))
    body.nodes.append(
        helper.make_node(
            "Where", [_active(body, t, lengths), alpha, "fa_alpha_in"], ["fa_alpha_out"]
        )
    )
    body.nodes.append(helper.make_node("Identity", ["fa_alpha_out"], ["fa_alpha_scan"]))
    forward = helper.make_graph(
        body.nodes,
        g.name("forward"),
        [
            helper.make_tensor_value_info("fa_iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("fa_cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("fa_alpha_in", TensorProto.DOUBLE, None),
        ],
        [
            helper.make_tensor_value_info("fa_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("fa_alpha_out", TensorProto.DOUBLE, None),
            helper.make_tensor_value_info("fa_alpha_scan", TensorProto.DOUBLE, None),
        ],
        body.initializers,
    )
    # Padding steps carry the last valid alpha, so the final carry is alpha[length - 1].
    last_alpha, alphas = g.op("Loop", [trips, true, alpha0], n_out=2, body=forward)
    alphas = g.op("Concat", [g.unsqueeze(alpha0, [0]), alphas], axis=0)
    log_z = g.logsumexp(g.op("Add", [last_alpha, end_t]), 1)
    nonempty = g.op("Greater", [lengths, g.const(0, "zero_i", "int64")])
    log_z = g.op("Where", [nonempty, log_z, g.const(0.0, "zero", "float64")])

    # Backward: beta[t] = end at a sequence's last position (and in its padding).
    body = g.subgraph()
    t = body.op("Sub", [body.op("Sub", [trips, one]), "bb_iter"])  # T - 1, ..., 0
    e_next = body.op("Gather", [em, body.op("Add", [t, one])], axis=0)
    nxt = body.unsqueeze(body.op("Add", [e_next, "bb_beta_in"]), [1])  # (B, 1, K)
    beta = body.logsumexp(body.op("Add", [trans, nxt]), 2)
    at_end = body.unsqueeze(body.op("Not", [body.op("Less", [t, body.op("Sub", [lengths, one])])]),
                            [1])  # fmt: skip
    body.nodes.append(helper.make_node("Identity", ["bb_cond_in"], ["bb_cond_out"]))
    body.nodes.append(
        helper.make_node("Where", [at_end, body.op("Expand", [end_t, body.op("Shape", [beta])]),
                                   beta], ["bb_beta_out"])
    )  # fmt: skip
    body.nodes.append(helper.make_node("Identity", ["bb_beta_out"], ["bb_beta_scan"]))
    backward = helper.make_graph(
        body.nodes,
        g.name("backward"),
        [
            helper.make_tensor_value_info("bb_iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("bb_cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("bb_beta_in", TensorProto.DOUBLE, None),
        ],
        [
            helper.make_tensor_value_info("bb_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("bb_beta_out", TensorProto.DOUBLE, None),
            helper.make_tensor_value_info("bb_beta_scan", TensorProto.DOUBLE, None),
        ],
        body.initializers,
    )
    beta_last = g.op("Expand", [end_t, g.op("Shape", [alpha0])])
    _, betas = g.op("Loop", [trips, true, beta_last], n_out=2, body=backward)  # T-1, ..., 0
    betas = g.op("Concat", [g.unsqueeze(beta_last, [0]), betas], axis=0)
    betas = _reverse_time(g, betas)
    beta_emit = g.op("Add", [betas, em])
    width = g.op("Shape", [emissions], start=1, end=2)
    zero, axis0 = g.const([0], "zero_1", "int64"), g.const([0], "ax", "int64")
    alphas = g.op("Transpose", [g.op("Slice", [alphas, zero, width, axis0])], perm=[1, 0, 2])
    beta_emit = g.op("Transpose", [g.op("Slice", [beta_emit, zero, width, axis0])], perm=[1, 0, 2])
    return alphas, beta_emit, log_z


def crf_model(
    transitions: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
    constraints: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray] | None = None,
    *,
    probabilities: bool = False,
    opset: int = MIN_OPSET,
) -> Any:
    """A standalone CRF graph (``onnx.ModelProto``).

    Inputs ``emissions (B, T, K)`` float32 and ``lengths (B,)`` int64. Outputs ``paths``
    and ``scores`` (Viterbi); with ``probabilities``, input ``temperature`` (float64 scalar)
    and outputs ``alpha``, ``beta_emit`` and ``log_z`` (forward-backward) instead.
    """
    from onnx import TensorProto, helper

    trans, start_m, end_m = masked_params(transitions, start, end, constraints)
    num_tags = trans.shape[0]
    g = GraphBuilder(opset)
    inputs = [
        helper.make_tensor_value_info("emissions", TensorProto.FLOAT, ["batch", "time", num_tags]),
        helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
    ]
    if probabilities:
        inputs.append(helper.make_tensor_value_info("temperature", TensorProto.DOUBLE, []))
        names = add_forward_backward(
            g, "emissions", "lengths", "temperature", trans, start_m, end_m
        )
        outputs = [("alpha", TensorProto.DOUBLE, ["batch", "time", num_tags]),
                   ("beta_emit", TensorProto.DOUBLE, ["batch", "time", num_tags]),
                   ("log_z", TensorProto.DOUBLE, ["batch"])]  # fmt: skip
    else:
        names = add_viterbi(g, "emissions", "lengths", trans, start_m, end_m)
        outputs = [("paths", TensorProto.INT64, ["batch", "time"]),
                   ("scores", TensorProto.DOUBLE, ["batch"])]  # fmt: skip
    for name, (out, _, _) in zip(names, outputs, strict=True):
        g.nodes.append(helper.make_node("Identity", [name], [out]))
    graph = helper.make_graph(
        g.nodes,
        "crf_probabilities" if probabilities else "crf_viterbi",
        inputs,
        [helper.make_tensor_value_info(out, dtype, shape) for out, dtype, shape in outputs],
        g.initializers,
    )
    return make_model(graph, opset)


def make_model(graph: Any, opset: int) -> Any:
    """A checked ``ModelProto`` of ``graph`` at ``opset``."""
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="spacy-crf-ner",
    )
    model.ir_version = min(model.ir_version, 10)  # what current onnxruntime releases read
    onnx.checker.check_model(model)
    return model
