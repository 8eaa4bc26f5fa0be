"""The synthetic proof: scenes with known scale/shift maps, and a short training run that learns them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tr2m.training.synthetic import DEPTH_RANGE, SCENE_TYPES, ProofConfig, SyntheticScenes, pearson, run_proof


def test_scenes_hold_the_affine_relation_exactly():
    scenes = SyntheticScenes(8, (56, 70), seed=3)
    for index in range(8):
        s = scenes[index]
        expected = 1.0 / (s["scale_true"].double() * s["rel"].double() + s["shift_true"].double())
        torch.testing.assert_close(s["depth"].double(), expected, rtol=1e-5, atol=0)
        assert s["rel"].min() > 0 and s["mask"].all()
        assert DEPTH_RANGE[0] - 1e-4 <= s["depth"].min() and s["depth"].max() <= DEPTH_RANGE[1] + 1e-4
        assert s["caption"] == SCENE_TYPES[index % len(SCENE_TYPES)].caption
        assert s["image"].shape == (3, 56, 70) and 0 <= s["image"].min() and s["image"].max() <= 1
    again = SyntheticScenes(8, (56, 70), seed=3)[5]
    assert all(torch.equal(again[k], scenes[5][k]) for k in ("image", "depth", "rel", "scale_true"))
    assert not torch.equal(SyntheticScenes(8, (56, 70), seed=4)[5]["image"], again["image"])


def test_pearson_is_nan_for_constant_maps():
    assert math.isnan(pearson(np.ones(10), np.arange(10.0)))
    assert pearson(np.arange(10.0), 2 * np.arange(10.0) + 1) == pytest.approx(1.0, abs=1e-12)


def test_short_proof_learns_depth_and_the_scale_map():
    """~30 s on 2 CPU cores. scripts/synthetic_proof.py runs the few-minute version."""
    result = run_proof(ProofConfig(train_scenes=64, test_scenes=16, steps=30, batch_size=4, lr=3e-3, progress=False))
    before, after = result.before, result.after
    print("\n" + result.summary())
    assert math.isnan(before["r_scale"])  # an untrained head predicts constant maps
    assert after["abs_rel"] < 0.5 * before["abs_rel"]
    assert after["d1"] > before["d1"] + 0.3
    assert after["r_scale"] > 0.5 and after["r_scale_spatial"] > 0.3
