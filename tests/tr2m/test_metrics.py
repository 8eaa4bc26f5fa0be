"""Metrics and the BTS/ZoeDepth evaluation protocol, against hand-computed values."""
import math
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tr2m.evaluation import (
    METRIC_NAMES, PROTOCOLS, EvalProtocol, MetricAccumulator, compute_errors, crop_mask, evaluate_image,
    get_protocol, prepare_prediction, resize_bilinear, valid_mask,
)


def test_compute_errors_hand_values():
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.0, 2.0, 2.0, 10.0])  # ratios 1, 1, 2, 1.25
    m = compute_errors(gt, pred)
    assert m["d1"] == 0.5          # 1.25 is not < 1.25
    assert m["d2"] == 0.75
    assert m["d3"] == 0.75         # 2 > 1.25**3 = 1.953
    assert m["abs_rel"] == pytest.approx(0.1875)     # (0.5 + 0.25) / 4
    assert m["sq_rel"] == pytest.approx(0.375)       # (4/4 + 4/8) / 4
    assert m["rmse"] == pytest.approx(math.sqrt(2.0))
    assert m["rmse_log"] == pytest.approx(0.364090, abs=1e-6)   # sqrt((ln2^2 + ln1.25^2) / 4)
    assert m["log10"] == pytest.approx(0.099485, abs=1e-6)      # (log10 2 + log10 1.25) / 4
    assert m["silog"] == pytest.approx(34.4608, abs=1e-3)       # 100 * std([0, 0, -ln2, ln1.25])


def test_perfect_prediction():
    gt = np.linspace(0.5, 9.0, 1000)
    m = compute_errors(gt, gt.copy())
    assert m["d1"] == m["d2"] == m["d3"] == 1.0
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert m[name] == 0.0


@pytest.mark.parametrize("k", [0.5, 1.7, 3.0])
def test_scaled_prediction_silog_zero_not_nan(k):
    gt = np.random.default_rng(0).uniform(0.5, 9.0, 5000)
    m = compute_errors(gt, k * gt)
    assert not any(math.isnan(v) for v in m.values())
    assert m["silog"] < 1e-5
    assert m["abs_rel"] == pytest.approx(abs(k - 1))
    assert m["rmse_log"] == pytest.approx(abs(math.log(k)))


def test_compute_errors_rejects_empty():
    with pytest.raises(ValueError, match="no valid pixels"):
        compute_errors(np.array([]), np.array([]))


def test_resize_matches_torch_align_corners():
    x = np.random.default_rng(1).uniform(0.1, 10, (31, 40))
    ours = resize_bilinear(x, (480, 640))
    ref = F.interpolate(torch.from_numpy(x)[None, None], size=(480, 640), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(ours, ref[0, 0].numpy(), rtol=1e-12, atol=1e-12)
    assert ours[0, 0] == x[0, 0] and ours[-1, -1] == x[-1, -1]


def test_prepare_prediction_clips_and_cleans():
    proto = EvalProtocol("t", 0.1, 10.0)
    pred = np.array([[np.nan, np.inf, -np.inf, 0.0, 100.0, 5.0]])
    out = prepare_prediction(pred, (1, 6), proto)
    np.testing.assert_array_equal(out, [[0.1, 10.0, 0.1, 0.1, 10.0, 5.0]])


def test_valid_mask_excludes_caps_and_crop():
    gt = np.full((480, 640), 5.0)
    gt[100, 100] = 1e-3   # == min: invalid
    gt[101, 100] = 10.0   # == max: invalid
    gt[10, 10] = 5.0      # outside the Eigen crop
    mask = valid_mask(gt, PROTOCOLS["nyu"])
    assert mask.sum() == 426 * 560 - 2
    assert not mask[10, 10] and mask[45, 41] and not mask[471, 300] and not mask[300, 601]


def test_garg_crop_fractions_of_the_map_scored():
    full = crop_mask((375, 1242), "garg")
    assert full.sum() == (371 - 153) * (1197 - 44)
    window = crop_mask((352, 1216), "garg")  # the KB window: fractions of 352x1216, as the authors
    expected = np.zeros((352, 1216), dtype=bool)
    expected[143:349, 43:1172] = True
    np.testing.assert_array_equal(window, expected)


def test_unknown_protocol_lists_valid_names():
    with pytest.raises(KeyError, match="nyu"):
        get_protocol("nyuv3")
    with pytest.raises(ValueError, match="valid crops"):
        EvalProtocol("x", 0.0, 1.0, crop="eigen")


def test_accumulator_means_over_images_and_skips_empty():
    acc = MetricAccumulator("hypersim")
    gt = np.full((4, 4), 2.0)
    first = acc.update(gt * 1.1, gt)
    second = acc.update(torch.from_numpy(gt * 1.3)[None], gt)  # tensor [1,H,W] accepted
    assert acc.update(gt, np.zeros((4, 4))) is None
    mean = acc.compute()
    assert acc.count == 2 and acc.skipped == 1
    assert set(mean) == set(METRIC_NAMES)
    assert mean["abs_rel"] == pytest.approx(0.2)
    assert mean["d1"] == pytest.approx(0.5) and mean["d2"] == pytest.approx(1.0)  # 1.3 > 1.25
    assert mean["rmse"] == pytest.approx((first["rmse"] + second["rmse"]) / 2)


def test_accumulator_empty_raises():
    with pytest.raises(ValueError, match="no image"):
        MetricAccumulator("nyu").compute()


def test_real_nyu_frame_with_low_res_prediction(shared_data):
    raw = cv2.imread(str(shared_data / "metric3d_nyu" / "depth" / "sync_depth_00000.png"), cv2.IMREAD_UNCHANGED)
    gt = raw.astype(np.float64) / 1000.0
    # A constant-depth prediction at a coarse size: resized, then scored inside the Eigen crop only.
    pred = np.full((31, 40), 3.0)
    m = evaluate_image(pred, gt, "nyu")
    mask = valid_mask(gt, PROTOCOLS["nyu"])
    assert 0.5 < mask.mean() < 0.75
    assert m["abs_rel"] == pytest.approx(np.mean(np.abs(gt[mask] - 3.0) / gt[mask]))
    exact = evaluate_image(gt * 1.2, gt, "nyu")
    assert exact["abs_rel"] == pytest.approx(0.2) and exact["silog"] < 1e-5
