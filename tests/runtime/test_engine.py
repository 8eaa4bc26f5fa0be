import subprocess
import sys

import numpy as np
import pytest
import torch

import tr2m
from runtime import Engine, Prediction
from runtime.errors import BundleError, CaptionError


@pytest.fixture
def engine(tiny_bundle, tmp_path):
    return Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "cache")


def _torch_model():
    torch.manual_seed(0)
    return tr2m.randomize_for_demo(tr2m.create_model("tiny", pretrained=False))


def test_engine_matches_pytorch_predict_on_real_frames(engine, real_frames):
    model = _torch_model()
    for frame in real_frames:
        ours = engine.predict(frame, caption="an office")
        ref = model.predict([frame], "an office")[0].numpy()
        assert ours.shape == frame.shape[:2] and ours.dtype == np.float32
        rel = np.abs(ours - ref) / ref
        assert np.median(rel) < 1e-4 and rel.max() < 1e-2


def test_maps_batch_and_precision(engine, tiny_bundle, real_frames, tmp_path):
    frames = real_frames[:2]
    results = engine.predict_batch(frames, ["a road", "a kitchen"], return_maps=True)
    for frame, result in zip(frames, results):
        assert isinstance(result, Prediction)
        for value in (result.depth, result.scale, result.shift, result.rel):
            assert value.shape == frame.shape[:2]
    with pytest.warns(UserWarning, match="FP16 graph is for GPUs"):
        half = Engine.open(tiny_bundle.bundle, backend="ort-cpu", precision="fp16", cache_dir=tmp_path / "c2")
    depth16 = half.predict(frames[0], caption="a road")
    assert np.median(np.abs(depth16 - results[0].depth) / results[0].depth) < 5e-3


def test_text_graph_runs_once_per_distinct_caption_across_runs(tiny_bundle, real_frames, tmp_path):
    schedule = ["an office", "a street", "an office", "a street", "a park", "an office"]
    first = Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "cache")
    calls = []
    original = first.text._run
    first.text._run = lambda captions: calls.append(list(captions)) or original(captions)
    for caption in schedule:
        first.predict(real_frames[0], caption=caption)
    assert sum(len(c) for c in calls) == 3
    assert (first.cache.hits, first.cache.misses) == (3, 3)
    second = Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "cache")
    second.text._run = lambda captions: pytest.fail(f"text graph ran for {captions}")
    for caption in schedule:
        second.predict(real_frames[0], caption=caption)
    assert second.cache.misses == 0


def test_bad_inputs_are_clear_errors(engine, tiny_bundle, real_frames):
    with pytest.raises(CaptionError, match="no caption given"):
        engine.predict(real_frames[0])
    with pytest.raises(CaptionError, match="shape"):
        engine.predict(real_frames[0], text_emb=np.zeros(7, np.float32))
    with pytest.raises(CaptionError, match="NaN"):
        engine.predict(real_frames[0], text_emb=np.full(32, np.nan, np.float32))
    with pytest.raises(BundleError, match="no int8 image graph"):
        Engine.open(tiny_bundle.bundle, precision="int8")
    with pytest.raises(BundleError, match="unknown backend"):
        Engine.open(tiny_bundle.bundle, backend="cuda-magic")


def test_runtime_never_imports_torch(tiny_bundle, tmp_path):
    script = (
        "import sys, numpy as np\n"
        "from runtime import Engine\n"
        "e = Engine.open(sys.argv[1], cache_dir=sys.argv[2])\n"
        "d = e.predict(np.zeros((48, 64, 3), np.uint8), caption='an office')\n"
        "assert d.shape == (48, 64)\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print('TORCH' if bad else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tiny_bundle.bundle), str(tmp_path / "c")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "CLEAN"
