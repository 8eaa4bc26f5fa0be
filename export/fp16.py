"""FP16 conversion with FP32 islands where half precision breaks.

Kept in float32: LayerNormalization and Softmax (variance and exp overflow past 65504), the
Exp of the scale/shift heads with its coefficient, and the final depth = 1 / (A * D_r + B)
(a small denominator overflows). Graph inputs and outputs stay float32, so the runtime feeds
the same tensors to every precision.
"""
from __future__ import annotations

from typing import List, Set

import onnx

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "Exp", "Reciprocal"]


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """float32 graph -> FP16 graph with float32 I/O and the islands above kept in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = sorted(_depth_formula_nodes(model) | _after_exp_nodes(model))
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=KEEP_FP32_OPS, node_block_list=keep, disable_shape_infer=False,
    )
    _topological_sort(half.graph)  # the converter appends its input Casts after their users
    return half


def _topological_sort(graph: onnx.GraphProto) -> None:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("FP16 graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def _producers(model: onnx.ModelProto):
    return {out: node for node in model.graph.node for out in node.output}


def _depth_formula_nodes(model: onnx.ModelProto) -> Set[str]:
    """The Reciprocal producing `depth` and the Mul/Add chain that feeds it."""
    producers = _producers(model)
    names: Set[str] = set()
    frontier: List[str] = [o.name for o in model.graph.output if o.name == "depth"]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.op_type not in {"Reciprocal", "Add", "Mul", "Div", "Cast"} or node.name in names:
            continue
        names.add(node.name)
        frontier.extend(node.input)
    return names


def _after_exp_nodes(model: onnx.ModelProto) -> Set[str]:
    """The coefficient Mul right after each Exp (0.01 * exp(.)), so A and B stay float32."""
    exp_outputs = {out for node in model.graph.node if node.op_type == "Exp" for out in node.output}
    return {node.name for node in model.graph.node if node.op_type == "Mul" and set(node.input) & exp_outputs}
