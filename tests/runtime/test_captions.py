"""runtime.captions: fixed captions, JSON and SRT schedules, and their errors."""
from __future__ import annotations

import json

import pytest

from runtime.captions import DEFAULT_CAPTION, CaptionRange, CaptionSchedule
from runtime.errors import CaptionError, CaptionFileError


def write_json(tmp_path, doc, name="captions.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_fixed_caption_covers_every_frame():
    schedule = CaptionSchedule.fixed("an office")
    assert {schedule.caption_at(i, i / 30) for i in range(100)} == {"an office"}
    assert schedule.caption_at(5, None) == "an office"
    with pytest.raises(CaptionError, match="non-empty"):
        CaptionSchedule.fixed("   ")


def test_json_time_ranges_are_half_open_and_gaps_use_the_default(tmp_path):
    path = write_json(tmp_path, [
        {"start": 0.0, "end": 2.0, "caption": "a kitchen"},
        {"start": 3.0, "end": 4.5, "caption": "a street at night"},
    ])
    schedule = CaptionSchedule.from_file(path, default="a room")
    at = {t: schedule.caption_at(int(t * 30), t) for t in (0.0, 1.99, 2.0, 2.5, 3.0, 4.49, 4.5)}
    assert at == {0.0: "a kitchen", 1.99: "a kitchen", 2.0: "a room", 2.5: "a room",
                  3.0: "a street at night", 4.49: "a street at night", 4.5: "a room"}
    assert schedule.captions() == ["a kitchen", "a street at night", "a room"]


def test_json_frame_ranges_open_ends_and_first_match_wins(tmp_path):
    path = write_json(tmp_path, {"default": "a house", "ranges": [
        {"start_frame": 10, "end_frame": 20, "caption": "a bedroom"},
        {"start_frame": 15, "caption": "a garden"},          # no end: to the end of the stream
        {"start": 0, "end": 1, "caption": "a hallway"},
    ]})
    schedule = CaptionSchedule.from_file(path)
    assert [schedule.caption_at(i, i / 5) for i in (0, 9, 10, 19, 20, 10_000)] == [
        "a hallway", "a house", "a bedroom", "a bedroom", "a garden", "a garden"]
    # A frame with no timestamp (a still image) cannot match a time range.
    assert schedule.caption_at(0, None) == "a house"


def test_default_precedence_argument_then_file_then_builtin(tmp_path):
    ranges = [{"start": 5, "end": 6, "caption": "a lab"}]
    with_default = write_json(tmp_path, {"default": "a factory", "ranges": ranges}, "a.json")
    bare = write_json(tmp_path, ranges, "b.json")
    assert CaptionSchedule.from_file(with_default, default="a cellar").caption_at(0, 0) == "a cellar"
    assert CaptionSchedule.from_file(with_default).caption_at(0, 0) == "a factory"
    assert CaptionSchedule.from_file(bare).caption_at(0, 0) == DEFAULT_CAPTION


SRT = (
    "\ufeff1\r\n00:00:00,000 --> 00:00:02,500\r\n<i>A living room</i>\r\nwith a sofa\r\n\r\n"
    "2\r\n00:00:04.000 --> 00:01:00,000\r\n{\\an8}a  street\r\n\r\n"
)


def test_srt_cues_with_bom_crlf_markup_and_dot_separator(tmp_path):
    path = tmp_path / "captions.srt"
    path.write_bytes(SRT.encode("utf-8"))
    schedule = CaptionSchedule.from_file(path, default="a scene")
    assert schedule.caption_at(0, 0.0) == "A living room with a sofa"
    assert schedule.caption_at(74, 2.49) == "A living room with a sofa"
    assert schedule.caption_at(75, 2.5) == "a scene"
    assert schedule.caption_at(120, 4.0) == "a street"
    assert schedule.caption_at(1800, 60.0) == "a scene"
    assert schedule.ranges[1] == CaptionRange(caption="a street", start=4.0, end=60.0)


BAD_FILES = {
    "empty.json": (b"", "empty"),
    "blank.srt": (b"  \n\n ", "empty"),
    "latin1.srt": ("1\n00:00:00,000 --> 00:00:01,000\nun caf\xe9\n".encode("latin-1"),
                   "not UTF-8"),
    "broken.json": (b'[{"start": 0, ', "invalid JSON at line 1"),
    "object.json": (b'{"start": 0, "end": 1, "caption": "x"}', "expected a list of ranges"),
    "scalar.json": (b'"a kitchen"', "expected a JSON list"),
    "nocaption.json": (b'[{"start": 0, "end": 1}]', "needs a \"caption\" string"),
    "backwards.json": (b'[{"start": 3, "end": 1, "caption": "x"}]', "is empty or negative"),
    "negative.json": (b'[{"start": -1, "end": 1, "caption": "x"}]', "is empty or negative"),
    "mixed.json": (b'[{"start": 0, "end_frame": 9, "caption": "x"}]', "must have"),
    "typo.json": (b'[{"start": 0, "ned": 9, "caption": "x"}]', "must have"),
    "floatframe.json": (b'[{"start_frame": 1.5, "caption": "x"}]', "must be integers"),
    "stringtime.json": (b'[{"start": "0:01", "caption": "x"}]', "must be numbers"),
    "blankcaption.json": (b'[{"start": 0, "caption": "  "}]', "non-empty caption"),
    "none.json": (b"[]", "no caption ranges"),
    "badtime.srt": (b"1\n00:00:00 --> 00:00:01\nhello\n", "malformed SRT cue"),
    "notext.srt": (b"1\n00:00:00,000 --> 00:00:01,000\n", "non-empty caption"),
    "captions.txt": (b"an office", "unsupported caption file type"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_caption_files_raise_one_line_errors(tmp_path, name):
    data, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CaptionFileError, match=message) as info:
        CaptionSchedule.from_file(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_missing_caption_file(tmp_path):
    with pytest.raises(CaptionFileError, match="not found"):
        CaptionSchedule.from_file(tmp_path / "nope.json")
