"""FP16 conversion with FP32 islands where half precision breaks.

Kept in float32: LayerNormalization and Softmax (variance and exp overflow past 65504), the
Exp of the scale/shift heads with its coefficient and the 1x1 conv that feeds it (exp turns
the exponent's absolute error into relative error: an FP16 ulp at 8 is 0.8%), and the final
depth = 1 / (A * D_r + B) (a small denominator overflows). Graph inputs and outputs stay float32, so the runtime feeds
the same tensors to every precision.
"""
from __future__ import annotations

from typing import List, Set

import onnx

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "Exp", "Reciprocal"]


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """float32 graph -> FP16 graph with float32 I/O and the islands above kept in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = sorted(depth_formula_nodes(model) | _around_exp_nodes(model))
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=KEEP_FP32_OPS, node_block_list=keep, disable_shape_infer=False,
    )
    _drop_cast_round_trips(half.graph)
    _topological_sort(half.graph)  # the converter appends its input Casts after their users
    return half


def _drop_cast_round_trips(graph: onnx.GraphProto) -> None:
    """Remove float32 -> float16 -> float32 Cast pairs the converter puts between two FP32 islands.

    Such a pair silently rounds an FP32 value to half precision (e.g. the exponent of A and B
    between its Conv and its Exp). The consumers of the second Cast read the original tensor.
    """
    producers = _producers_of(graph)
    rename = {}
    for node in graph.node:
        if not _is_cast(node, onnx.TensorProto.FLOAT):
            continue
        first = producers.get(node.input[0])
        if first is not None and _is_cast(first, onnx.TensorProto.FLOAT16) and _is_float32(graph, first.input[0], producers):
            rename[node.output[0]] = first.input[0]
    if not rename:
        return
    graph_outputs = {o.name for o in graph.output}
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    keep = [n for n in graph.node if not (n.output and n.output[0] in rename and n.output[0] not in graph_outputs)]
    used = {name for n in keep for name in n.input} | graph_outputs
    keep = [n for n in keep if n.op_type != "Cast" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)


def _is_cast(node: onnx.NodeProto, to: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == to for a in node.attribute)


def _producers_of(graph: onnx.GraphProto):
    return {out: node for node in graph.node for out in node.output}


def _is_float32(graph: onnx.GraphProto, name: str, producers) -> bool:
    """Whether tensor `name` is float32: a graph input, a Cast to float, or a float32 value_info."""
    if any(i.name == name for i in graph.input):
        return True
    node = producers.get(name)
    if node is not None and _is_cast(node, onnx.TensorProto.FLOAT):
        return True
    infos = {vi.name: vi.type.tensor_type.elem_type for vi in graph.value_info}
    return infos.get(name) == onnx.TensorProto.FLOAT


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


def depth_formula_nodes(model: onnx.ModelProto) -> Set[str]:
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


def _around_exp_nodes(model: onnx.ModelProto) -> Set[str]:
    """The Conv feeding each Exp and the coefficient Mul after it (0.01 * exp(conv(.)))."""
    producers = _producers(model)
    exps = [node for node in model.graph.node if node.op_type == "Exp"]
    exp_outputs = {out for node in exps for out in node.output}
    feeding = {producers[n.input[0]].name for n in exps if n.input[0] in producers and producers[n.input[0]].op_type == "Conv"}
    after = {node.name for node in model.graph.node if node.op_type == "Mul" and set(node.input) & exp_outputs}
    return feeding | after
