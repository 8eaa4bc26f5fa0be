"""Calibration sets: sampling, the runtime's exact preprocessing, captions through the text graph."""
from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

from calib import MIN_RECOMMENDED_FRAMES, CalibrationConfig, CalibrationWarning, build_calibration_set, sample_frames
from runtime.bundle import Bundle
from runtime.preprocess import Preprocessor
from runtime.sources import open_source


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return Bundle.open(tiny_bundle.bundle)


@pytest.fixture(scope="module")
def bedroom(shared_data):
    return shared_data / "videos" / "sam2_bedroom.mp4"  # 200 frames


def _indices(origins):
    return [int(o.rsplit("#", 1)[1]) for o in origins]


def _frame(path, index):
    with open_source(path) as source:
        for frame in source:
            if frame.index == index:
                return frame.rgb
    raise AssertionError(f"no frame {index}")


def test_every_kth_frame_through_the_runtime_preprocessing(bundle, bedroom):
    pre = Preprocessor.for_bundle(bundle)
    images, origins = sample_frames([bedroom], CalibrationConfig(size=5, every=10), pre)
    assert _indices(origins) == [0, 10, 20, 30, 40]
    assert images.shape == (5, 3, bundle.preprocessing.height, bundle.preprocessing.width) and images.dtype == np.float32
    np.testing.assert_array_equal(images[3], pre(_frame(bedroom, 30))[0])  # bit-identical to the runtime


def test_random_sampling_is_seeded_and_covers_the_clip(bundle, bedroom):
    pre = Preprocessor.for_bundle(bundle)
    pick = lambda seed: _indices(sample_frames([bedroom], CalibrationConfig(size=6, every=4, seed=seed), pre)[1])  # noqa: E731
    first, again, other = pick(0), pick(0), pick(1)
    assert first == again and first != other
    assert first == sorted(first) and all(i % 4 == 0 for i in first) and len(first) == 6
    assert max(first) > 100  # reservoir sampling reaches past the first frames


def test_size_is_split_over_sources_and_folders_use_every_image(bundle, bedroom, shared_data):
    folder = shared_data / "metric3d_nyu" / "rgb"  # 3 images
    _, origins = sample_frames([bedroom, folder], CalibrationConfig(size=6, every=50), Preprocessor.for_bundle(bundle))
    assert origins[:3] == [f"{bedroom}#0", f"{bedroom}#50", f"{bedroom}#100"]
    assert origins[3:] == [f"{folder}#rgb_00000.jpg", f"{folder}#rgb_00050.jpg", f"{folder}#rgb_00100.jpg"]


def test_captions_are_embedded_by_the_bundles_text_graph(bundle, bedroom):
    from runtime.tokenizer import ClipTokenizer

    captions = ["a bedroom", "children jumping on a bed"]
    with pytest.warns(CalibrationWarning, match=f"only 4 calibration frames .*fewer than {MIN_RECOMMENDED_FRAMES}"):
        calib = build_calibration_set(bundle, [bedroom], captions=captions, config=CalibrationConfig(size=4, every=25))
    assert calib.captions == captions * 2 and len(calib) == 4
    session = ort.InferenceSession(str(bundle.graph_path("text")), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"token_ids": ClipTokenizer.from_file(bundle.tokenizer_path)(captions)})[0]
    # The runtime's TextEmbedder (its ORT session options, and entries cached by earlier runs) against a
    # plain session: the same graph, float32 noise only (measured up to 7e-7 absolute).
    np.testing.assert_allclose(calib.text_emb, np.concatenate([expected, expected]), rtol=1e-5, atol=1e-5)
    assert calib.meta["frames"] == 4 and calib.meta["captions"] == captions


def test_generic_captions_and_a_single_source_are_warned_about(bundle, bedroom):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_calibration_set(bundle, [bedroom], config=CalibrationConfig(size=2, every=100))
    messages = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
    assert any("generic captions" in m for m in messages) and any("only 2 calibration frames" in m for m in messages)


def test_the_reader_feeds_every_sample_then_stops_and_rewinds(bundle, bedroom):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        calib = build_calibration_set(bundle, [bedroom], captions=["a room"], config=CalibrationConfig(size=3, every=50))
    reader = calib.reader()
    feeds = [reader.get_next() for _ in range(4)]
    assert feeds[3] is None
    assert [f["image"].shape[0] for f in feeds[:3]] == [1, 1, 1] and set(feeds[0]) == {"image", "text_emb"}
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], feeds[0]["image"])


def test_bad_settings_are_refused(bundle):
    with pytest.raises(ValueError, match="at least 1"):
        CalibrationConfig(size=0)
    with pytest.raises(ValueError, match="every must be"):
        CalibrationConfig(every=0)
    with pytest.raises(ValueError, match="no calibration sources"):
        sample_frames([], CalibrationConfig(), Preprocessor.for_bundle(bundle))
