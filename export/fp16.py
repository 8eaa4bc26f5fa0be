"""FP16 conversion with FP32 islands where half precision breaks.

Kept in float32: LayerNormalization and Softmax (variance and exp overflow past 65504), the
Exp of the scale/shift heads with its coefficient and the 1x1 conv that feeds it (exp turns
the exponent's absolute error into relative error: an FP16 ulp at 8 is 0.8%), and the final
depth = 1 / (A * D_r + B) (a small denominator overflows). Graph inputs and outputs stay float32, so the runtime feeds
the same tensors to every precision, and the outputs computed in FP32 islands (depth, scale,
shift) reach them without a round trip through half precision: only D_r (rel), which Depth
Anything computes in FP16, carries FP16 values.

Attention logits are formed from a pre-scaled query: softmax((Q / sqrt(d)) K^T) rather than
softmax((Q K^T) / sqrt(d)), the same value, but the FP16 MatMul output is sqrt(d) times smaller
(8x for DINOv2-L, DA-S and CLIP-L, head width 64). transformers' eager attention scales after
the product, so Q K^T of high-norm tokens (DINOv2-L has them) can pass 65504 and turn into inf
before the scaling would have brought it back. `prescale_attention` rewrites every such
attention in the graph, whichever model it came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Set

import onnx

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "Exp", "Reciprocal"]


def to_fp16(model: onnx.ModelProto, *, weights_dir: Optional[Path] = None) -> onnx.ModelProto:
    """float32 graph -> FP16 graph with float32 I/O, pre-scaled attention and the islands above
    kept in float32. The attention rewrite is applied to `model` itself (same values in FP32).

    weights_dir: `model` was loaded without its external data (the weight file is in this folder).
    The rewrite and shape inference then run on the graph alone (inference copies every tensor it
    is given), and the weights are read in only for the conversion itself."""
    prescale_attention(model)
    if weights_dir is None:
        return convert_with_fp32_islands(model)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.load_external_data_for_model(model, str(weights_dir))
    return convert_with_fp32_islands(model, shapes_inferred=True)


def prescale_attention(model: onnx.ModelProto) -> int:
    """Rewrite Softmax(Scale(MatMul(Q, K^T)) [+ mask]) as Softmax(MatMul(Scale(Q), K^T) [+ mask]).

    Scale is a Mul or Div by a scalar constant. Attentions already scaled before the product
    (torch's scaled_dot_product_attention export) are left as they are. Returns how many
    attentions were rewritten; the graph is changed in place.
    """
    graph = model.graph
    producers = _producers_of(graph)
    uses = _use_counts(graph)
    scalars = _scalar_constants(graph)
    moved = []
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        found = _post_scaled_logits(softmax.input[0], producers, uses, scalars, depth=3)
        if found is None:
            continue
        scale, matmul = found
        constant = next(name for name in scale.input if name in scalars)
        logits, raw = scale.output[0], matmul.output[0]
        scale.input[:] = [matmul.input[0], constant]  # Div keeps the constant as divisor
        scale.output[0] = f"{raw}_prescaled_q"
        matmul.input[0], matmul.output[0] = scale.output[0], logits
        moved.append(raw)
    stale = set(moved)
    kept = [vi for vi in graph.value_info if vi.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    if moved:
        _topological_sort(graph)  # each Scale now runs before its MatMul
    return len(moved)


def _post_scaled_logits(name: str, producers, uses, scalars, depth: int):
    """(scale node, MatMul node) when `name` is Q K^T scaled after the product, through Add/Cast."""
    node = producers.get(name)
    if node is None or depth < 0:
        return None
    if node.op_type in ("Mul", "Div"):
        constant = node.input[1] if node.op_type == "Div" else next((i for i in node.input if i in scalars), None)
        if constant not in scalars:
            return None
        other = node.input[0] if node.input[1] == constant else node.input[1]
        matmul = producers.get(other)
        if matmul is not None and matmul.op_type == "MatMul" and uses.get(other) == 1:
            return node, matmul
        return None
    if node.op_type in ("Add", "Cast"):
        for source in node.input:
            found = _post_scaled_logits(source, producers, uses, scalars, depth - 1)
            if found is not None:
                return found
    return None


def _use_counts(graph: onnx.GraphProto):
    counts = {}
    for name in [i for n in graph.node for i in n.input] + [o.name for o in graph.output]:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _scalar_constants(graph: onnx.GraphProto) -> Set[str]:
    """Names of one-element constants: initializers and Constant node outputs."""
    names = {t.name for t in graph.initializer if _numel(t.dims) == 1}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and _numel(value.dims) == 1:
                names.add(node.output[0])
    return names


def _numel(dims) -> int:
    count = 1
    for d in dims:
        count *= d
    return count


def convert_with_fp32_islands(model: onnx.ModelProto, *, shapes_inferred: bool = False) -> onnx.ModelProto:
    """The FP16 conversion itself (float32 I/O, islands above in float32), attention as it is.
    shapes_inferred: `model` already carries ONNX shape inference's value_info."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = sorted(depth_formula_nodes(model) | _around_exp_nodes(model))
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=KEEP_FP32_OPS, node_block_list=keep,
        disable_shape_infer=shapes_inferred,
    )
    _drop_cast_round_trips(half.graph)
    _topological_sort(half.graph)  # the converter appends its input Casts after their users
    return half


def _drop_cast_round_trips(graph: onnx.GraphProto) -> None:
    """Remove float32 -> float16 -> float32 Cast pairs the converter puts around FP32 islands.

    Such a pair silently rounds an FP32 value to half precision: the exponent of A and B between
    its Conv and its Exp, and, with `keep_io_types`, every float32 output computed in an island
    (depth, scale, shift would all be FP16 values in a float32 tensor). Consumers of the second
    Cast read the original tensor; a graph output keeps its name through an Identity.
    """
    producers = _producers_of(graph)
    graph_outputs = {o.name for o in graph.output}
    rename = {}
    for node in graph.node:
        if not _is_cast(node, onnx.TensorProto.FLOAT):
            continue
        first = producers.get(node.input[0])
        if first is None or not _is_cast(first, onnx.TensorProto.FLOAT16) or not _is_float32(graph, first.input[0], producers):
            continue
        if node.output[0] in graph_outputs:
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
        else:
            rename[node.output[0]] = first.input[0]
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    keep = [n for n in graph.node if not (n.output and n.output[0] in rename)]
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
