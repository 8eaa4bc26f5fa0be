import pytest

from tr2m.config import TR2MConfig, get_preset, list_presets


def test_presets_are_registered_with_their_sizes():
    assert {"paper", "kitti", "tiny"} <= set(list_presets())
    assert get_preset("paper").input_size == (434, 560)
    assert get_preset("kitti").input_size == (350, 1204)
    assert get_preset("paper").patch_grid == (31, 40)


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="paper"):
        get_preset("papr")


def test_size_not_multiple_of_14_is_a_clear_error():
    with pytest.raises(ValueError, match="multiples of 14.*434x560"):
        get_preset("paper").replace(input_size=(430, 565))


def test_mismatched_widths_are_rejected():
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="in_channels"):
        tiny.replace(image=get_preset("paper").image)


def test_json_round_trip_keeps_every_field():
    for name in list_presets():
        cfg = get_preset(name)
        assert TR2MConfig.from_json(cfg.to_json()) == cfg


def test_each_preset_carries_the_display_range_its_bundles_show():
    assert {name: get_preset(name).display_range_m for name in list_presets()} == {
        "kitti": (1.0, 80.0), "paper": (0.5, 10.0), "paper_v2": (0.5, 10.0), "sunrgbd": (0.5, 10.0), "tiny": None}
    config = get_preset("kitti")
    assert TR2MConfig.from_json(config.to_json()).display_range_m == (1.0, 80.0)
    with pytest.raises(ValueError, match="display_range_m"):
        config.replace(display_range_m=(80.0, 1.0))
