"""Keyframe mode: relative graph every frame, scale/shift graph every K frames (runtime.keyframe)."""
import math
import subprocess
import sys

import numpy as np
import pytest

from runtime import Engine, Prediction
from runtime.errors import CaptionError
from runtime.keyframe import KeyframePredictor
from runtime.preprocess import resize_back


@pytest.fixture(scope="module")
def clip(shared_data):
    """The first 10 frames of a real video (RGB uint8, 720x1280)."""
    from runtime.sources import open_source

    frames = []
    with open_source(shared_data / "videos" / "sam2_04_coffee.mp4") as source:
        for frame in source:
            frames.append(frame.rgb)
            if len(frames) == 10:
                break
    return frames


@pytest.fixture(scope="module")
def engine(tiny_bundle, tmp_path_factory):
    return Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path_factory.mktemp("kf-cache"))


def _count_calls(predictor):
    calls = {"relative": 0, "scale_shift": 0}
    for name in calls:
        graph = getattr(predictor, name)
        original = graph.run

        def run(feeds, _name=name, _original=original):
            calls[_name] += 1
            return _original(feeds)

        graph.run = run
    return calls


def test_every_1_equals_the_per_frame_engine_exactly(engine, clip):
    kf = KeyframePredictor(engine, every=1)
    for frame in clip[:4]:
        ours = kf.predict(frame, caption="an office", return_maps=True)
        ref = engine.predict(frame, caption="an office", return_maps=True)
        assert isinstance(ours, Prediction)
        for name in ("depth", "scale", "shift", "rel"):
            assert np.array_equal(getattr(ours, name), getattr(ref, name)), name
        assert kf.last_was_keyframe


@pytest.mark.parametrize("every", [3, 4])
def test_scale_shift_runs_on_keyframes_only_and_keyframes_match_the_engine(engine, clip, every):
    kf = KeyframePredictor(engine, every=every)
    calls = _count_calls(kf)
    key_maps = None
    for i, frame in enumerate(clip):
        ours = kf.predict(frame, caption="an office", return_maps=True)
        assert kf.last_was_keyframe == (i % every == 0)
        if i % every == 0:
            ref = engine.predict(frame, caption="an office", return_maps=True)
            assert np.array_equal(ours.depth, ref.depth)
            key_maps = (ours.scale, ours.shift)
        else:  # A and B reused from the keyframe; D_r is this frame's own
            assert np.array_equal(ours.scale, key_maps[0]) and np.array_equal(ours.shift, key_maps[1])
            rel = engine.predict(frame, caption="an office", return_maps=True).rel
            assert np.array_equal(ours.rel, rel)
    assert calls == {"relative": len(clip), "scale_shift": math.ceil(len(clip) / every)}
    assert (kf.frames, kf.keyframes) == (len(clip), math.ceil(len(clip) / every))


def test_depth_between_keyframes_is_computed_from_reused_maps(engine, clip):
    kf = KeyframePredictor(engine, every=8)
    key = engine.image.run({"image": engine.preprocessor([clip[0]]),
                            "text_emb": engine.embed(["an office"])})
    kf.predict(clip[0], caption="an office")
    depth = kf.predict(clip[1], caption="an office")
    rel = kf.relative.run({"image": engine.preprocessor([clip[1]])})["rel"][0, 0]
    expected = resize_back(np.reciprocal(key["scale"][0, 0] * rel + key["shift"][0, 0]), clip[1].shape[:2])
    assert depth.dtype == np.float32 and np.array_equal(depth, expected)


def test_a_caption_change_forces_a_keyframe(engine, clip):
    kf = KeyframePredictor(engine, every=100)
    calls = _count_calls(kf)
    captions = ["an office", "an office", "a kitchen", "a kitchen", "a kitchen", "an office"]
    flags = []
    for frame, caption in zip(clip, captions):
        depth = kf.predict(frame, caption=caption)
        flags.append(kf.last_was_keyframe)
        if kf.last_was_keyframe:
            assert np.array_equal(depth, engine.predict(frame, caption=caption))
    assert flags == [True, False, True, False, False, True]
    assert calls["scale_shift"] == 3


def test_a_text_embedding_change_forces_a_keyframe_and_keyframe_true_too(engine, clip):
    kf = KeyframePredictor(engine, every=100)
    a, b = engine.embed(["an office", "a kitchen"])
    flags = []
    for frame, emb in zip(clip, [a, a, b, b]):
        kf.predict(frame, text_emb=emb)
        flags.append(kf.last_was_keyframe)
    kf.predict(clip[4], text_emb=b, keyframe=True)
    assert flags == [True, False, True, False] and kf.last_was_keyframe


def test_smoothing_averages_maps_over_keyframes_and_resets_on_a_new_caption(engine, clip):
    plain = KeyframePredictor(engine, every=2, smoothing=0.0)
    smooth = KeyframePredictor(engine, every=2, smoothing=0.75)
    fresh = [engine.predict(f, caption="an office", return_maps=True) for f in clip[:3:2]]  # the keyframes 0, 2
    for frame in clip[:3]:
        p = plain.predict(frame, caption="an office", return_maps=True)
        s = smooth.predict(frame, caption="an office", return_maps=True)
    # smoothing 0: the newest maps; smoothing 0.75: 0.75 * keyframe 0 + 0.25 * keyframe 2
    assert np.array_equal(p.scale, fresh[1].scale) and np.array_equal(p.depth, fresh[1].depth)
    np.testing.assert_allclose(s.scale, 0.75 * fresh[0].scale + 0.25 * fresh[1].scale, rtol=1e-5)
    np.testing.assert_allclose(s.shift, 0.75 * fresh[0].shift + 0.25 * fresh[1].shift, rtol=1e-5)
    assert not np.array_equal(s.depth, p.depth)
    # a new caption restarts the average: the maps are the new scene's own
    s = smooth.predict(clip[3], caption="a kitchen", return_maps=True)
    ref = engine.predict(clip[3], caption="a kitchen", return_maps=True)
    assert smooth.last_was_keyframe and np.array_equal(s.depth, ref.depth)


def test_open_from_a_bundle_folder_without_an_engine(tiny_bundle, engine, clip, tmp_path):
    kf = KeyframePredictor(tiny_bundle.bundle, every=4, backend="ort-cpu", cache_dir=tmp_path / "cache")
    assert kf.backend_name == "ort-cpu"
    assert np.array_equal(kf.predict(clip[0], caption="an office"), engine.predict(clip[0], caption="an office"))
    kf.reset()
    kf.predict(clip[1], caption="an office")
    assert kf.last_was_keyframe and kf.frames == 1


def test_invalid_settings_and_missing_caption(engine, clip):
    with pytest.raises(ValueError, match="every"):
        KeyframePredictor(engine, every=0)
    with pytest.raises(ValueError, match="smoothing"):
        KeyframePredictor(engine, smoothing=1.0)
    with pytest.raises(CaptionError):
        KeyframePredictor(engine).predict(clip[0])


def test_keyframe_mode_never_imports_torch():
    code = "import sys, runtime.keyframe; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_keyframe_mode_runs_the_precision_asked_for(tiny_bundle, engine, clip, tmp_path):
    """--precision fp16 with keyframes runs the FP16 halves (it used to run FP32 silently)."""
    fp16 = Engine.open(tiny_bundle.bundle, backend="ort-cpu", precision="fp16", cache_dir=tmp_path / "c", lazy=True)
    kf = KeyframePredictor(fp16, every=1)
    assert kf.precision == "fp16"
    for frame in clip[:2]:
        depth = kf.predict(frame, caption="an office")
        assert not np.array_equal(depth, engine.predict(frame, caption="an office"))  # not the FP32 halves
        fused = fp16.predict(frame, caption="an office")
        # the same FP16 layers as the fused FP16 graph, converted on their own: FP16-close, not identical
        assert np.median(np.abs(depth - fused) / fused) <= 5e-3


def test_keyframe_mode_opens_only_the_graphs_it_runs(tiny_bundle, clip, tmp_path):
    lazy = Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "c", lazy=True)
    kf = KeyframePredictor(lazy, every=2)
    for frame in clip[:3]:
        kf.predict(frame, caption="an office")
    assert lazy._image is None  # the fused graph (as large as both halves) was never loaded


def test_keyframe_refuses_a_precision_the_bundle_lacks(tiny_bundle, tmp_path):
    from runtime.bundle import Bundle
    from runtime.errors import BundleError

    with pytest.raises(BundleError, match="needs the 'relative_int8' graph.*INT8 calibration"):
        KeyframePredictor(tiny_bundle.bundle, precision="int8", backend="ort-cpu", cache_dir=tmp_path / "c")
    bundle = Bundle.open(tiny_bundle.bundle)  # a bundle exported before the FP16 halves existed
    bundle.manifest["graphs"] = {k: v for k, v in bundle.manifest["graphs"].items() if not k.endswith("_fp16")}
    with pytest.raises(BundleError, match=r"relative_fp16.*tr2m-export onnx --half"):
        KeyframePredictor(bundle, precision="fp16", backend="ort-cpu", cache_dir=tmp_path / "c")
