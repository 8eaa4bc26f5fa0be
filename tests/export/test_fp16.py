"""FP16 conversion fidelity: FP32 outputs stay FP32 values, attention logits are formed from a
pre-scaled query, and that keeps large attention logits finite in half precision."""
import copy
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import parity
from export.fp16 import convert_with_fp32_islands, prescale_attention, to_fp16
from export.onnx_export import OPSET, simplify
from runtime.bundle import Bundle
from tr2m.config import ImageEncoderConfig
from tr2m.encoders import ImageEncoder
from tr2m.transforms import prepare, to_tensor

FP16_MAX = 65504.0


def _run(path_or_model, feeds):
    model = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _fp16_representable(x: np.ndarray) -> float:
    return float(np.mean(x == x.astype(np.float16).astype(np.float32)))


def test_fp16_graph_outputs_are_fp32_values(tiny_bundle, real_frames):
    # depth, scale and shift are computed in FP32 islands; a half cast before the float32
    # output used to round every value to FP16 (all of them representable in half).
    bundle = Bundle.open(tiny_bundle.bundle)
    pre = bundle.manifest["preprocessing"]
    image = prepare(to_tensor(real_frames[1])[None], (pre["height"], pre["width"]), pre["mean"], pre["std"])
    text = np.random.default_rng(0).standard_normal((1, bundle.manifest["text_encoder"]["dim"])).astype(np.float32)
    depth, scale, shift, rel = _run(bundle.graph_path("image_fp16"), {"image": image.numpy(), "text_emb": text})
    for name, value in (("depth", depth), ("scale", scale), ("shift", shift)):
        assert np.isfinite(value).all(), name
        assert _fp16_representable(value) < 0.01, name
    assert _fp16_representable(rel) == 1.0  # D_r itself is computed in FP16 (Depth Anything)


def _softmax_logits_producers(model: onnx.ModelProto):
    """For each Softmax: the op types between it and the MatMul forming its logits (Add/Cast skipped)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    chains = []
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        node, between = producers[softmax.input[0]], []
        while node.op_type in ("Add", "Cast", "Mul", "Div"):
            if node.op_type in ("Mul", "Div"):
                between.append(node.op_type)
            node = producers[node.input[0]]
        chains.append((node.op_type, between))
    return chains


@pytest.mark.parametrize("graph", ["image_fp16", "image"])
def test_every_attention_in_the_image_graphs_is_prescaled(tiny_bundle, graph):
    # The FP32 graph too: TensorRT 10 builds FP16 engines from it (weak typing).
    model = onnx.load(str(Bundle.open(tiny_bundle.bundle).graph_path(graph)))
    chains = _softmax_logits_producers(model)
    assert len(chains) == 4 + 2 + 1  # Depth Anything's backbone, DINOv2, the head's self-attention
    assert chains == [("MatMul", [])] * len(chains)  # no scaling between Q K^T and the softmax


def test_the_text_graph_is_prescaled_too(tiny_bundle):
    # The CLIP text graph is not converted to FP16 today; if it is, its attentions are covered.
    model = onnx.load(str(Bundle.open(tiny_bundle.bundle).graph_path("text")))
    assert _softmax_logits_producers(model) == [("MatMul", [])] * 2  # tiny CLIP: two layers


@pytest.fixture(scope="module")
def loud_attention(tmp_path_factory):
    """A one-layer DINOv2 (head width 64, as DINOv2-L) whose Q and K projections are scaled so that
    Q K^T passes FP16's range before the 1/8 scaling while the scaled logits stay inside it."""
    torch.manual_seed(0)
    encoder = ImageEncoder.from_config(ImageEncoderConfig(source="", hidden_size=128, num_layers=1, num_heads=2),
                                       pretrained=False).eval()
    attention = encoder.model.encoder.layer[0].attention
    with torch.no_grad():
        for proj in (attention.q_proj, attention.k_proj):
            proj.weight.mul_(300.0)
            proj.bias.mul_(300.0)
    image = torch.randn(1, 3, 56, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = encoder.model.encoder.layer[0].norm1(encoder.model.embeddings(image))
        q = attention.q_proj(tokens).view(1, -1, 2, 64).transpose(1, 2)
        k = attention.k_proj(tokens).view(1, -1, 2, 64).transpose(1, 2)
        peak = float((q @ k.transpose(-1, -2)).abs().max())
        reference = encoder(image).numpy()
    # The graph as the exporter writes it (eager attention: Q K^T first, then the scaling);
    # export_onnx would already pre-scale it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(encoder, (image,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                    output_names=["tokens"], optimize=True, verify=False, report=False)
    path = tmp_path_factory.mktemp("fp16") / "dinov2.onnx"
    onnx.save(simplify(program.model_proto), str(path))
    return path, image.numpy(), reference, peak


def _reference_run(model: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    # The ONNX reference evaluator computes each FP16 node in half precision, as a GPU does.
    # (ORT on CPU has no FP16 MatMul: it computes it in FP32 and never materialises FP16 logits.)
    from onnx.reference import ReferenceEvaluator

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(model).run(None, {"image": image})[0]


def test_prescaled_attention_keeps_large_logits_finite_in_fp16(loud_attention):
    path, image, reference, peak = loud_attention
    assert FP16_MAX < peak < 8 * FP16_MAX  # overflows unscaled, fits once scaled by 1/8

    unscaled = _reference_run(convert_with_fp32_islands(onnx.load(str(path))), image)
    assert not np.isfinite(unscaled).all()  # Q K^T overflowed to inf before the scaling

    prescaled = to_fp16(onnx.load(str(path)))
    limit = parity.TOLERANCES["fp16"]
    for got in (_reference_run(prescaled, image), _run(prescaled, {"image": image})[0]):
        assert np.isfinite(got).all()
        assert np.median(parity.relative_error(got, reference)) <= limit


def test_prescaling_leaves_the_fp32_graph_unchanged(loud_attention):
    path, image, _, _ = loud_attention
    model = onnx.load(str(path))
    rewritten = copy.deepcopy(model)
    assert prescale_attention(rewritten) == 1
    onnx.checker.check_model(rewritten, full_check=True)
    # 1/8 is a power of two: Q/8 . K^T is bit-identical to (Q . K^T)/8 in FP32.
    np.testing.assert_array_equal(_run(rewritten, {"image": image})[0], _run(model, {"image": image})[0])
