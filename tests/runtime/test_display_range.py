"""runtime.display_range: the video's fixed colour range, from the bundle or a first frame."""
from __future__ import annotations

import numpy as np

from runtime.display_range import auto_range, default_range


def test_the_bundle_range_or_the_preset_default():
    assert default_range({"preset": "paper"}) == (0.5, 10.0)
    assert default_range({"preset": "kitti"}) == (1.0, 80.0)
    assert default_range({"preset": "tiny"}) is None
    assert default_range({"preset": "paper", "display_range_m": [0.2, 5]}) == (0.2, 5.0)


def test_auto_range_rounds_the_percentiles_outwards():
    depth = np.linspace(0.63, 273.0, 1000, dtype=np.float32).reshape(20, 50)
    depth[0, 0] = np.nan
    lo, hi = auto_range(depth)
    assert lo <= 6.1 and hi >= 267 and (lo, hi) == (round(lo, 6), round(hi, 6))
