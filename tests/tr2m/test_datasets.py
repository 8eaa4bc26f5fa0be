"""Dataset readers on the real samples in shared/data (read in place) and on files made in tmp_path."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tr2m.data import (
    NO_AUGMENT, AugmentConfig, CaptionError, DatasetConfig, augment, build_dataset, c3vd_caption, list_datasets,
)

NYU_FRAMES = ["00000", "00050", "00100"]
KITTI_FRAMES = ["0000000005", "0000000050", "0000000100"]


@pytest.fixture
def nyu(shared_data) -> Path:
    return shared_data / "metric3d_nyu"


@pytest.fixture
def kitti(shared_data) -> Path:
    return shared_data / "metric3d_kitti"


def _captions(root: Path, rel: str, n: int = 15) -> list:
    lines = [f"a basement, description {i} of {rel}" for i in range(10)]
    lines += [f"An image with a shelf, a heater, object list {i}." for i in range(n - 10)]
    path = root / Path(rel).with_suffix(".txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def _nyu(root, tmp_path, train=False, **kw):
    split = tmp_path / "nyu_split.txt"
    split.write_text("".join(f"/rgb/rgb_{f}.jpg /depth/sync_depth_{f}.png 518.8579\n" for f in NYU_FRAMES))
    captions = {f: _captions(tmp_path / "captions", f"rgb/rgb_{f}.jpg") for f in NYU_FRAMES}
    cfg = dict(name="nyu", root=str(root), split=str(split), train=train, captions_root=str(tmp_path / "captions"))
    return build_dataset(**{**cfg, **kw}), captions


def _raw(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32)


# ---------------------------------------------------------------- NYU

def test_nyu_eval_samples_match_readme(nyu, tmp_path):
    ds, captions = _nyu(nyu, tmp_path)
    assert len(ds) == 3
    for i, frame in enumerate(NYU_FRAMES):
        s = ds[i]
        assert s["image"].shape == (3, 480, 640) and s["image"].dtype == torch.float32
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert s["depth"].shape == (1, 480, 640) and s["mask"].dtype == torch.bool
        np.testing.assert_array_equal(s["depth"][0].numpy(), _raw(nyu / "depth" / f"sync_depth_{frame}.png") / 1000)
        valid = s["depth"][s["mask"]]
        assert torch.equal(s["mask"], s["depth"] > 0)
        assert 0.67 <= s["mask"].float().mean() <= 0.76          # README: 67-75 % valid
        assert 0.7 <= valid.min() and valid.max() <= 8.3          # README: 0.71-8.27 m
        assert s["caption"] == captions[frame][0]                 # evaluation: line 0
        assert s["name"] == f"rgb/rgb_{frame}" and s["dataset"] == "nyu"
        assert s["crop_box"].tolist() == [0, 0, 480, 640]
    rgb = cv2.cvtColor(cv2.imread(str(nyu / "rgb" / "rgb_00000.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(ds[0]["image"].permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)


def test_nyu_train_zeroes_border_and_draws_caption_lines(nyu, tmp_path):
    torch.manual_seed(0)
    ds, captions = _nyu(nyu, tmp_path, train=True, augment=NO_AUGMENT)
    s = ds[0]
    raw = _raw(nyu / "depth" / "sync_depth_00000.png") / 1000
    depth = s["depth"][0].numpy()
    inside = np.zeros(raw.shape, dtype=bool)
    inside[45:472, 43:608] = True
    assert (depth[~inside] == 0).all() and (raw[~inside] > 0).any()
    np.testing.assert_array_equal(depth[inside], raw[inside])
    drawn = {ds[0]["caption"] for _ in range(40)}
    assert drawn <= set(captions["00000"]) and len(drawn) > 5


def test_nyu_eval_never_augments(nyu, tmp_path):
    always = AugmentConfig(hflip=1.0, photometric=1.0)
    plain, _ = _nyu(nyu, tmp_path)
    augmented_cfg, _ = _nyu(nyu, tmp_path, augment=always)
    assert torch.equal(plain[1]["image"], augmented_cfg[1]["image"])
    train, _ = _nyu(nyu, tmp_path, train=True, augment=AugmentConfig(hflip=1.0, photometric=0.0))
    flipped = train[1]
    assert torch.equal(flipped["image"], plain[1]["image"].flip(-1))
    assert torch.equal(flipped["mask"], flipped["depth"] > 0)


def test_missing_caption_is_a_clear_error_or_default(nyu, tmp_path):
    ds, _ = _nyu(nyu, tmp_path, captions_root=str(tmp_path / "nowhere"))
    with pytest.raises(CaptionError, match="captions_root"):
        ds[0]
    ds, _ = _nyu(nyu, tmp_path, captions_root=str(tmp_path / "nowhere"), default_caption="an indoor scene")
    assert ds[0]["caption"] == "an indoor scene"


def test_loader_collates_samples(nyu, tmp_path):
    ds, _ = _nyu(nyu, tmp_path)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 480, 640) and batch["mask"].shape == (2, 1, 480, 640)
    assert batch["caption"] == [ds[0]["caption"], ds[1]["caption"]]
    assert batch["crop_box"].shape == (2, 4) and batch["dataset"] == ["nyu", "nyu"]


# ---------------------------------------------------------------- KITTI

def _kitti(root, tmp_path, train=False):
    split = tmp_path / "kitti_split.txt"
    lines = [f"rgb/{f}.png depth/{f}.png 707.0493\n" for f in KITTI_FRAMES] + ["rgb/0000000007.png None 707.0493\n"]
    split.write_text("".join(lines))
    for f in KITTI_FRAMES:
        _captions(tmp_path / "captions", f"rgb/{f}.png")
    return build_dataset(name="kitti", root=str(root), split=str(split), train=train,
                         captions_root=str(tmp_path / "captions"), augment=NO_AUGMENT)


def test_kitti_kb_crop_units_and_valid_fraction(kitti, tmp_path):
    ds = _kitti(kitti, tmp_path)
    assert len(ds) == 3  # the line without GT is dropped
    for i, frame in enumerate(KITTI_FRAMES):
        s = ds[i]
        raw = _raw(kitti / "depth" / f"{frame}.png") / 256
        assert s["image"].shape == (3, 352, 1216) and s["depth"].shape == (1, 352, 1216)
        top, left = 375 - 352, (1242 - 1216) // 2
        assert s["crop_box"].tolist() == [top, left, 375, 1242]
        np.testing.assert_array_equal(s["depth"][0].numpy(), raw[top:top + 352, left:left + 1216])
        assert 0.18 <= s["mask"].sum().item() / raw.size <= 0.21     # README: 18-21 % of the frame
        valid = s["depth"][s["mask"]]
        assert 5.1 <= valid.min() and valid.max() <= 84.9           # README: 5.1-84.9 m


def test_kitti_train_matches_eval_without_augmentation(kitti, tmp_path):
    train, test = _kitti(kitti, tmp_path, train=True), _kitti(kitti, tmp_path)
    assert torch.equal(train[2]["depth"], test[2]["depth"])


# ---------------------------------------------------------------- VOID, C3VD, folder (files made here)

def _write_pair(root: Path, rel_image: str, rel_depth: str, depth_raw: np.ndarray, size=(48, 64)):
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    for rel in (rel_image, rel_depth):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / rel_image), image)
    if rel_depth.endswith(".npy"):
        np.save(root / rel_depth, depth_raw)
    else:
        cv2.imwrite(str(root / rel_depth), depth_raw)
    return image[..., ::-1]


def test_void_parallel_lists(tmp_path):
    raw = np.full((48, 64), 512, dtype=np.uint16)
    raw[0, 0] = 0
    _write_pair(tmp_path, "seq/image/1.png", "seq/ground_truth/1.png", raw)
    (tmp_path / "images.txt").write_text("seq/image/1.png\n")
    (tmp_path / "depths.txt").write_text("seq/ground_truth/1.png\n")
    ds = build_dataset(name="void", root=str(tmp_path), split=str(tmp_path / "images.txt"),
                       depth_split=str(tmp_path / "depths.txt"), default_caption="a room")
    s = ds[0]
    assert s["depth"][0, 1, 1].item() == 2.0 and not s["mask"][0, 0, 0] and s["caption"] == "a room"


def test_c3vd_tiff_units_size_and_generated_caption(tmp_path):
    raw = np.full((108, 135), 65535 // 2, dtype=np.uint16)
    raw[:, :10] = 0
    _write_pair(tmp_path, "cecum_t2_b/0000_color.png", "cecum_t2_b/0000_depth.tiff", raw, size=(108, 135))
    (tmp_path / "seqs.txt").write_text("cecum_t2_b\n")
    s = build_dataset(name="c3vd", root=str(tmp_path), split=str(tmp_path / "seqs.txt"))[0]
    assert s["image"].shape == (3, 480, 640) and s["depth"].shape == (1, 480, 640)
    assert s["depth"][0, 240, 320].item() == pytest.approx(32767 * 100 / 65535)  # millimetres
    assert not s["mask"][0, :, :20].any()
    expected = "The image shows a medical scene of cecum with texture type two."
    assert s["caption"] == c3vd_caption("cecum_t2_b") == expected
    with pytest.raises(ValueError, match="colon"):
        c3vd_caption("stomach")


def test_folder_dataset_png_and_npy(tmp_path):
    raw = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    rgb = _write_pair(tmp_path, "rgb/a.png", "depth/a.png", raw)
    _write_pair(tmp_path, "rgb/b.jpg", "depth/b.npy", raw.astype(np.float32))
    _captions(tmp_path / "captions", "a.png")
    _captions(tmp_path / "captions", "b.jpg")
    ds = build_dataset(name="folder", root=str(tmp_path), depth_scale=5000.0)
    assert [ds[i]["name"] for i in range(len(ds))] == ["a", "b"]
    np.testing.assert_allclose(ds[0]["depth"][0].numpy(), raw / 5000.0)
    np.testing.assert_allclose(ds[1]["depth"][0].numpy(), raw / 5000.0)
    np.testing.assert_allclose(ds[0]["image"].permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)
    assert ds[1]["caption"].startswith("a basement, description 0")


def test_folder_dataset_errors(tmp_path):
    _write_pair(tmp_path, "rgb/a.png", "depth/a.png", np.ones((48, 64), np.uint16))
    with pytest.raises(ValueError, match="depth_scale"):
        build_dataset(name="folder", root=str(tmp_path))
    (tmp_path / "rgb" / "c.png").write_bytes((tmp_path / "rgb" / "a.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="no depth map for 'c'"):
        build_dataset(name="folder", root=str(tmp_path), depth_scale=1000.0)


def test_size_mismatch_is_reported(tmp_path):
    _write_pair(tmp_path, "rgb/a.png", "depth/a.png", np.ones((40, 64), np.uint16))
    ds = build_dataset(name="folder", root=str(tmp_path), depth_scale=1000.0, default_caption="x")
    with pytest.raises(ValueError, match="sizes differ"):
        ds[0]


def test_registry_names_and_errors(nyu, tmp_path):
    assert set(list_datasets()) == {"nyu", "kitti", "void", "c3vd", "folder"}
    with pytest.raises(KeyError, match="kitti"):
        DatasetConfig(name="nyu2", root=".")
    with pytest.raises(ValueError, match="split"):
        build_dataset(name="nyu", root=str(nyu))


# ---------------------------------------------------------------- augmentation

def test_augment_flip_and_photometric():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (8, 10, 3)).astype(np.float32)
    depth = rng.uniform(1, 5, (8, 10)).astype(np.float32)
    img, dep = augment(image, depth, AugmentConfig(hflip=1.0, photometric=0.0), rng)
    np.testing.assert_array_equal(img, image[:, ::-1])
    np.testing.assert_array_equal(dep, depth[:, ::-1])
    identity = AugmentConfig(hflip=0.0, photometric=1.0, gamma=(1, 1), brightness=(1, 1), colour=(1, 1))
    np.testing.assert_allclose(augment(image, depth, identity, rng)[0], image, rtol=1e-6)
    bright = AugmentConfig(hflip=0.0, photometric=1.0, gamma=(1, 1), brightness=(2, 2), colour=(1, 1))
    img, dep = augment(image, depth, bright, rng)
    np.testing.assert_allclose(img, np.clip(image * 2, 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(dep, depth)
    with pytest.raises(ValueError, match="gamma"):
        AugmentConfig(gamma=(1.1, 0.9))
