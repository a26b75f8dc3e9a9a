"""Tiny ONNX graphs the tests serve: several dtypes, two inputs, dynamic non-batch dimensions, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_model(path: Path, offset: float = 0.0) -> None:
    """Two FP32 inputs a, b [-1, 4] → sum = a + b + offset, product = a * b."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4])
    total = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4])
    product = helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 4])
    offset_init = helper.make_tensor("offset", TensorProto.FLOAT, [], [offset])
    nodes = [
        helper.make_node("Add", ["a", "b"], ["raw_sum"]),
        helper.make_node("Add", ["raw_sum", "offset"], ["sum"]),
        helper.make_node("Mul", ["a", "b"], ["product"]),
    ]
    _save(helper.make_graph(nodes, "add", [a, b], [total, product], [offset_init]), path)


def mixed_model(path: Path) -> None:
    """INT64 ids, FP64 weights and BOOL mask [-1, 3] → masked FP64 = mask ? ids * weights : 0, next_ids = ids + 1."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])
    weights = helper.make_tensor_value_info("weights", TensorProto.DOUBLE, ["batch", 3])
    mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 3])
    masked = helper.make_tensor_value_info("masked", TensorProto.DOUBLE, ["batch", 3])
    next_ids = helper.make_tensor_value_info("next_ids", TensorProto.INT64, ["batch", 3])
    inits = [
        helper.make_tensor("zero", TensorProto.DOUBLE, [], [0.0]),
        helper.make_tensor("one", TensorProto.INT64, [], [1]),
    ]
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["ids_f", "weights"], ["scaled"]),
        helper.make_node("Where", ["mask", "scaled", "zero"], ["masked"]),
        helper.make_node("Add", ["ids", "one"], ["next_ids"]),
    ]
    _save(helper.make_graph(nodes, "mixed", [ids, weights, mask], [masked, next_ids], inits), path)


IDENTITY_TYPES = {
    "fp16": TensorProto.FLOAT16,
    "int32": TensorProto.INT32,
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "string": TensorProto.STRING,
}


def identity_model(path: Path, elem_type: int) -> None:
    """x [-1, 2] of the given type → y = x."""
    x = helper.make_tensor_value_info("x", elem_type, ["batch", 2])
    y = helper.make_tensor_value_info("y", elem_type, ["batch", 2])
    _save(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y]), path)


def sequence_model(path: Path) -> None:
    """tokens FP32 [-1, -1, 8] (rows, dynamic sequence length, 8) → mean over the sequence [-1, 8]."""
    tokens = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq", 8])
    mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 8])
    node = helper.make_node("ReduceMean", ["tokens"], ["mean"], axes=[1], keepdims=0)
    _save(helper.make_graph([node], "sequence", [tokens], [mean]), path)


def fixed_model(path: Path) -> None:
    """x FP32 [2, 2] with no batch dimension → y = x * 2 (serve with max_batch_size = 0)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    _save(helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "fixed", [x], [y], [two]), path)


def reshape_model(path: Path) -> None:
    """x FP32 [-1, -1] → reshaped to [-1, 3]: ONNX Runtime fails when a row's length is not a multiple of 3."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    _save(helper.make_graph([node], "reshape", [x], [y], [shape]), path)


CLASSIFIER_WEIGHTS = np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 0.0], [0.0, -0.5, 1.0]], dtype=np.float32)


def classifier_model(path: Path, weights: np.ndarray = CLASSIFIER_WEIGHTS, *, fail_above: float | None = None
                     ) -> None:
    """features FP32 [-1, 3] → probabilities = softmax(features @ W) over 3 classes, label = argmax.

    With `fail_above`, a row whose first feature exceeds it fails the run (an out-of-range Gather), as a faulty
    model version would."""
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 3], np.asarray(weights, np.float32).flatten().tolist())
    initializers = [w]
    nodes = [helper.make_node("MatMul", ["features", "W"], ["logits"])]
    if fail_above is not None:
        initializers += [
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("limit", TensorProto.FLOAT, [], [fail_above]),
            helper.make_tensor("ten", TensorProto.INT64, [], [10]),
            helper.make_tensor("zeros", TensorProto.FLOAT, [5], [0.0] * 5),
        ]
        nodes += [
            helper.make_node("Slice", ["features", "starts", "ends", "axes"], ["first"]),
            helper.make_node("Greater", ["first", "limit"], ["over"]),
            helper.make_node("Cast", ["over"], ["over_int"], to=TensorProto.INT64),
            helper.make_node("Mul", ["over_int", "ten"], ["index"]),
            helper.make_node("Gather", ["zeros", "index"], ["nothing"], axis=0),
            helper.make_node("Add", ["logits", "nothing"], ["checked"]),
        ]
    nodes += [
        helper.make_node("Softmax", ["checked" if fail_above is not None else "logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    _save(helper.make_graph(nodes, "classifier", [features], [probabilities, label], initializers), path)


def slow_model(path: Path, width: int = 256, layers: int = 64) -> None:
    """x FP32 [-1, width] → `layers` chained MatMuls with a scaled identity: y == x, at a cost that grows with rows."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [width, width], np.eye(width, dtype=np.float32).flatten())
    nodes = []
    previous = "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, "w"], [out]))
        previous = out
    _save(helper.make_graph(nodes, "slow", [x], [y], [weight]), path)


def gather_model(path: Path) -> None:
    """index INT64 [-1, 1] → value = table[index] FP32 [-1, 1], a table of 5: an index of 5 or more fails the run."""
    index = helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1])
    value = helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])
    table = helper.make_tensor("table", TensorProto.FLOAT, [5], [10.0, 11.0, 12.0, 13.0, 14.0])
    node = helper.make_node("Gather", ["table", "index"], ["value"], axis=0)
    _save(helper.make_graph([node], "gather", [index], [value], [table]), path)


def chain_model(path: Path, steps: int = 2000) -> None:
    """x FP32 [-1, 4] → `steps` chained elementwise Sin then Add(0.5): about a millisecond a run whatever the rows,
    and row results that do not depend on which rows share the run."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = []
    previous = "x"
    for i in range(steps):
        nodes.append(helper.make_node("Sin", [previous], [f"s{i}"]))
        out = "y" if i == steps - 1 else f"a{i}"
        nodes.append(helper.make_node("Add", [f"s{i}", "half"], [out]))
        previous = out
    _save(helper.make_graph(nodes, "chain", [x], [y], [half]), path)
