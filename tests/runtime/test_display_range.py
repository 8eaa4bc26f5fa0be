"""runtime.display_range: the video's fixed colour range, from the bundle's manifest or a first frame."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from runtime.bundle import Bundle
from runtime.errors import BundleError, Tr2mRuntimeWarning
from runtime.display_range import auto_range, default_range


def test_the_range_comes_from_the_manifest_not_from_a_table_of_presets():
    assert default_range({"preset": "kitti", "display_range_m": [0.2, 5]}) == (0.2, 5.0)
    assert default_range({"preset": "kitti", "display_range_m": None}) is None  # the bundle asks for auto
    assert default_range({"preset": "made-up", "display_range_m": [1, 30]}) == (1.0, 30.0)


def test_an_older_bundle_without_the_field_gets_auto_and_is_told_so():
    with pytest.warns(Tr2mRuntimeWarning, match="predates display_range_m.*--range MIN:MAX or re-export"):
        assert default_range({"preset": "paper"}) is None


def test_the_exported_bundle_carries_its_range_and_a_malformed_one_is_refused(tiny_bundle, tmp_path):
    manifest = Bundle.open(tiny_bundle.bundle).manifest
    assert "display_range_m" in manifest and manifest["display_range_m"] is None  # tiny: random weights, auto
    folder = shutil.copytree(tiny_bundle.bundle, tmp_path / "bundle")
    (folder / "manifest.json").write_text(json.dumps(dict(manifest, display_range_m=[10, 1])))
    with pytest.raises(BundleError, match="display_range_m"):
        Bundle.open(folder)


def test_auto_range_rounds_the_percentiles_outwards():
    depth = np.linspace(0.63, 273.0, 1000, dtype=np.float32).reshape(20, 50)
    depth[0, 0] = np.nan
    lo, hi = auto_range(depth)
    assert lo <= 6.1 and hi >= 267 and (lo, hi) == (round(lo, 6), round(hi, 6))
