"""tr2m-caption: caption files the loaders read, scene cuts on real footage, caption schedules.

The models are tiny random-weight LLaVA-NeXT / Mask2Former folders saved with save_pretrained and
loaded back with the hub off, through the same from_pretrained path as the real hub ids.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tr2m.captioning.cli import main
from tr2m.captioning.prompts import DESCRIPTIONS, LINES_PER_FILE, OBJECT_LIST_OPENING, OBJECT_LISTS
from tr2m.captioning.scenes import SceneConfig, detect_scenes
from tr2m.captioning.text import CONTEXT_LENGTH, cap_tokens, clean_line, object_sentence, shuffled_sentences, token_count

FAST = ["--max-new-tokens", "24", "--batch", "3", "-q"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _nyu_split(shared: Path, tmp_path: Path) -> Path:
    split = tmp_path / "split.txt"
    split.write_text("".join(f"rgb/rgb_{i:05d}.jpg depth/sync_depth_{i:05d}.png 518.8579\n" for i in (0, 50, 100)))
    return split


def _object_multiset(line: str) -> list:
    assert line.startswith(OBJECT_LIST_OPENING + " ") and line.endswith(".")
    body = line[len(OBJECT_LIST_OPENING) + 1:-1]
    return sorted(re.split(r", and |, | and ", body))


def _check_file(path: Path) -> list:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == LINES_PER_FILE + 1  # 15 lines, newline-terminated
    lines = lines[:-1]
    for line in lines:
        assert line.strip() == line and line and not set(line) & set("\"\r\t“”")
        assert token_count(line) < CONTEXT_LENGTH
    descriptions, lists = lines[:DESCRIPTIONS], lines[DESCRIPTIONS:]
    assert not any(d.startswith(OBJECT_LIST_OPENING) for d in descriptions)
    assert len({tuple(_object_multiset(x)) for x in lists}) == 1  # one multiset, reordered
    return lines


def test_dataset_files_round_trip_through_nyu_loader_and_resume(shared_data, tiny_captioners, tmp_path, capsys):
    from tr2m.data import build_dataset

    describer, objects = tiny_captioners
    root, out = shared_data / "metric3d_nyu", tmp_path / "caps"
    args = ["dataset", "--dataset", "nyu", "--root", str(root), "--split", str(_nyu_split(shared_data, tmp_path)),
            "--out", str(out), "--model", str(describer), "--objects-model", str(objects), *FAST]
    assert main(args) == 0
    files = sorted(out.rglob("*.txt"))
    assert [f.relative_to(out).as_posix() for f in files] == [f"rgb/rgb_{i:05d}.txt" for i in (0, 50, 100)]
    lines = {f.stem: _check_file(f) for f in files}
    settings = json.loads((out / "tr2m-captions.json").read_text())
    assert settings["describer"] == str(describer) and settings["sampling"]["seed"] == 0
    assert len(lines["rgb_00000"][DESCRIPTIONS:]) == OBJECT_LISTS

    loader = build_dataset(name="nyu", root=str(root), split=str(tmp_path / "split.txt"), captions_root=str(out))
    assert [loader[i]["caption"] for i in range(3)] == [lines[f"rgb_{i:05d}"][0] for i in (0, 50, 100)]

    stamps = [f.stat().st_mtime_ns for f in files]
    files[1].write_text("half a file\n")  # an interrupted run by another tool: redone, the rest skipped
    capsys.readouterr()
    assert main(args) == 0
    assert "1 files written, 2 already complete" in capsys.readouterr().out
    assert [files[0].stat().st_mtime_ns, files[2].stat().st_mtime_ns] == [stamps[0], stamps[2]]
    _check_file(files[1])

    other = [a if a != "0" else "1" for a in args[:-len(FAST)]] + ["--seed", "7", *FAST]
    assert main(other) == 2
    assert "other settings (sampling" in capsys.readouterr().err


def test_dataset_files_round_trip_through_folder_loader(shared_data, tiny_captioners, tmp_path):
    from tr2m.data import build_dataset

    root = tmp_path / "mine"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    for i in (0, 50):
        os.symlink(shared_data / "metric3d_nyu" / "rgb" / f"rgb_{i:05d}.jpg", root / "rgb" / f"f{i}.jpg")
        os.symlink(shared_data / "metric3d_nyu" / "depth" / f"sync_depth_{i:05d}.png", root / "depth" / f"f{i}.png")
    describer, objects = tiny_captioners
    assert main(["dataset", "--dataset", "folder", "--root", str(root), "--out", str(root / "captions"),
                 "--model", str(describer), "--objects-model", str(objects), *FAST]) == 0
    loader = build_dataset(name="folder", root=str(root), depth_scale=1000.0)  # default captions/<stem>.txt
    for i, stem in enumerate(("f0", "f50")):
        lines = _check_file(root / "captions" / f"{stem}.txt")
        assert loader[i]["caption"] == lines[0]


def test_dataset_bad_input_is_one_line(tiny_captioners, tmp_path, capsys):
    describer, objects = tiny_captioners
    (tmp_path / "empty").mkdir()
    assert main(["dataset", "--dataset", "folder", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                 "--model", str(describer), "--objects-model", str(objects), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "rgb/" in err
    assert main(["dataset", "--dataset", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "valid" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ lines
def test_clean_line_makes_one_quoted_free_sentence():
    assert clean_line('Caption: "The image shows\na kitchen\r\n with   a table"') == "The image shows a kitchen with a table."
    assert clean_line("  a bedroom,") == "A bedroom."
    assert clean_line("it's a dog's bed") == "It's a dog's bed."
    assert clean_line(' "" \n ') == ""


def test_cap_tokens_keeps_whole_clauses_within_clips_context():
    clauses = ["the image shows a long corridor in an office building"] + [
        f"with a {w} door on the left side and a {w} lamp" for w in ("red", "blue", "green", "white", "black", "grey")]
    line = ", ".join(clauses) + "."
    assert token_count(line) == CONTEXT_LENGTH  # too long: CLIP would cut it mid-word
    capped = cap_tokens(line)
    assert token_count(capped) < CONTEXT_LENGTH and capped.endswith(".") and line.startswith(capped[:-1])
    assert capped[:-1].endswith(("lamp", "building"))  # ends where a clause ends
    assert cap_tokens("A kitchen.") == "A kitchen."


def test_object_lists_are_shuffles_of_one_counted_multiset():
    items = [("sky", 1), ("person", 2), ("car", 20), ("umbrella", 1), ("bus", 3), ("road", 1)]
    sentences = shuffled_sentences(items, 5, np.random.default_rng(0))
    assert len(set(sentences)) > 1
    expected = sorted(["a sky", "two people", "twenty cars", "an umbrella", "three buses", "a road"])
    assert all(_object_multiset(s) == expected for s in sentences)
    assert object_sentence([("wall", 1), ("chair", 2)]) == "An image with a wall and two chairs."
    many = shuffled_sentences([(f"thing{i}", 1) for i in range(60)], 2, np.random.default_rng(0))
    assert all(token_count(s) < CONTEXT_LENGTH for s in many)


# ------------------------------------------------------------------------------ scenes
def test_scene_cut_found_at_the_join_and_none_inside_the_clips(joined_video):
    from runtime.sources import open_source

    path, cut = joined_video
    with open_source(str(path)) as frames:
        scenes = detect_scenes(frames)
    assert len(scenes) == 2
    assert abs(scenes[1].start - cut) <= 1 and scenes[0].start == 0 and scenes[1].end == cut + 70


def test_short_flicker_merges_but_a_real_shot_does_not(joined_clips):
    from runtime.sources import Frame

    first, second = joined_clips
    def frames(rgbs):
        return [Frame(index=i, timestamp_s=i / 30, rgb=rgb) for i, rgb in enumerate(rgbs)]
    flicker = first[:60] + second[:3] + first[60:]  # 3 frames of another clip, then back
    assert len(detect_scenes(frames(flicker))) == 1
    inserted = first[:60] + second[:40] + first[60:]  # a 40-frame shot is kept: three scenes
    assert [s.start for s in detect_scenes(frames(inserted))] == [0, 60, 100]
    tail = first + second[:5]  # a short last shot joins the one before
    assert len(detect_scenes(frames(tail), SceneConfig(min_frames=15))) == 1


@pytest.mark.parametrize("suffix", [".srt", ".json"])
def test_video_schedule_reads_back_with_two_ranges(joined_video, tiny_captioners, tmp_path, suffix):
    from runtime.captions import CaptionSchedule
    from runtime.sources import open_source

    path, cut = joined_video
    out = tmp_path / f"scenes{suffix}"
    assert main(["video", str(path), "--out", str(out), "--model", str(tiny_captioners[0]), *FAST]) == 0
    schedule = CaptionSchedule.from_file(out)
    assert len(schedule.ranges) == 2
    with open_source(str(path)) as frames:
        times = [f.timestamp_s for f in frames]
    covering = [[r.covers(i, t) for r in schedule.ranges] for i, t in enumerate(times)]
    assert all(c == [True, False] for c in covering[:cut]) and all(c == [False, True] for c in covering[cut:])


def test_image_folder_schedule_uses_frame_ranges(joined_clips, tiny_captioners, tmp_path, capsys):
    import cv2
    from runtime.captions import CaptionSchedule

    first, second = joined_clips
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, rgb in enumerate(first[:20] + second[:20]):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "scenes.json"
    assert main(["video", str(folder), "--out", str(out), "--model", str(tiny_captioners[0]), *FAST]) == 0
    ranges = CaptionSchedule.from_file(out).ranges
    assert [(r.unit, r.start, r.end) for r in ranges] == [("frame", 0, 20), ("frame", 20, 40)]
    assert main(["video", str(folder), "--out", str(tmp_path / "s.srt"), "--model", str(tiny_captioners[0]), "-q"]) == 2
    assert "no timestamps" in capsys.readouterr().err and not (tmp_path / "s.srt").exists()
