"""One graph to ONNX: dynamo export with a dynamic batch, simplification, checks, metadata;
weights in the bundle's shared weight file."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import onnx
import torch
from torch import nn

from .fp16 import prescale_attention
from .weights import WeightStore, weight_operands

OPSET = 18
MAX_BATCH = 64


def export_onnx(module: nn.Module, inputs: Mapping[str, torch.Tensor], output_names: Sequence[str],
                path: Path, *, metadata: Mapping[str, str], store: Optional[WeightStore] = None) -> onnx.ModelProto:
    """Trace `module` on `inputs` (batch dynamic, other axes fixed) and write a checked ONNX file
    whose weights live in `store`, a file in the same folder that a bundle's graphs share (default:
    the graph's own `<file>.data`).

    Returns the graph without its weights. The layer weights leave memory as soon as the exporter
    hands them over: simplification (which copies the graph several times) works on a graph whose
    MatMul/Conv weights wait in a scratch file; biases and constants, which it inspects, stay in.
    """
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = {name: {0: batch} for name in inputs}
    with _quiet():
        program = torch.onnx.export(
            module.eval(), tuple(inputs.values()), dynamo=True, opset_version=OPSET,
            input_names=list(inputs), output_names=list(output_names), dynamic_shapes=dynamic,
            optimize=True, verify=False, report=False,
        )
    store = store or WeightStore(path.with_name(f"{path.name}.data"))
    model = program.model_proto
    del program  # the exporter's own graph and folded constants
    scratch = WeightStore(path.parent / f".{path.name}.scratch")
    try:
        scratch.externalize(model, names=weight_operands(model))
        with _working_directory(path.parent):  # onnxslim would read external data relative to the cwd
            model = simplify(model)
        prescale_attention(model)  # also for FP16 engines TensorRT 10 builds from this FP32 graph
        store.externalize(model)  # moves each tensor from the scratch file, once per distinct tensor
    finally:
        scratch.path.unlink(missing_ok=True)
    set_metadata(model, metadata)
    write_onnx(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and graph clean-up with onnxslim (parity is checked afterwards)."""
    import onnxslim

    with _quiet():
        return onnxslim.slim(model)


@contextlib.contextmanager
def _working_directory(directory: Path):
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def write_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write a graph whose large tensors are already external (see WeightStore): nodes only."""
    path.write_bytes(model.SerializeToString())


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and warnings per step; the CLI shows its own progress."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def io_names(model: onnx.ModelProto) -> Dict[str, list]:
    return {"inputs": [i.name for i in model.graph.input], "outputs": [o.name for o in model.graph.output]}
