"""One graph to ONNX: dynamo export with a dynamic batch, simplification, checks, metadata."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Dict, Mapping, Sequence

import onnx
import torch
from torch import nn

from .fp16 import prescale_attention

OPSET = 18
MAX_BATCH = 64
TWO_GB = 2 * 1024**3


def export_onnx(module: nn.Module, inputs: Mapping[str, torch.Tensor], output_names: Sequence[str],
                path: Path, *, metadata: Mapping[str, str]) -> onnx.ModelProto:
    """Trace `module` on `inputs` (batch dynamic, other axes fixed) and write a checked ONNX file."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = {name: {0: batch} for name in inputs}
    with _quiet():
        program = torch.onnx.export(
            module.eval(), tuple(inputs.values()), dynamo=True, opset_version=OPSET,
            input_names=list(inputs), output_names=list(output_names), dynamic_shapes=dynamic,
            optimize=True, verify=False, report=False,
        )
    model = simplify(program.model_proto)
    prescale_attention(model)  # also for FP16 engines TensorRT 10 builds from this FP32 graph
    set_metadata(model, metadata)
    save_onnx(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and graph clean-up with onnxslim (parity is checked afterwards)."""
    import onnxslim

    with _quiet():
        return onnxslim.slim(model)


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """One file, or external data beside it only when the graph passes protobuf's 2 GB limit."""
    large = model.ByteSize() > TWO_GB if _can_measure(model) else True
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=f"{path.name}.data" if large else None)


def _can_measure(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf refuses to size messages past 2 GB
        return False


def external_files(path: Path) -> list:
    """Files an ONNX graph keeps beside itself (external data), relative to its folder."""
    model = onnx.load(str(path), load_external_data=False)
    names = {
        entry.value for tensor in model.graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data if entry.key == "location"
    }
    return sorted(names)


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and warnings per step; the CLI shows its own progress."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def io_names(model: onnx.ModelProto) -> Dict[str, list]:
    return {"inputs": [i.name for i in model.graph.input], "outputs": [o.name for o in model.graph.output]}
