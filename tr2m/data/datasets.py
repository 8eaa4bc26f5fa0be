"""RGB-depth-caption dataset readers, picked by name from `DATASETS`.

Every reader yields the same sample dict:

    image    float32 [3,H,W] RGB in [0,1]
    depth    float32 [1,H,W] ground truth (metres; C3VD: millimetres, as the authors train it); 0 = invalid
    mask     bool    [1,H,W] depth > 0 and finite
    caption  str     a random caption line in training, line 0 in evaluation
    name     str     the image path relative to the root, without extension
    dataset  str     the registry name (the loss reads per-dataset settings from it)
    crop_box int64   [4] (top, left, frame_h, frame_w): where this window sits in the camera frame
                     (KITTI's KB crop); (0, 0, H, W) otherwise. For pasting maps back into the
                     frame; the metric crops apply to the window itself, as the authors score it.

Resizing to the model's input size is the model's job, not the dataset's; only the crops and
sizes that belong to a dataset's protocol happen here (KITTI KB crop, C3VD 480x640).
Augmentations (flip, photometric) run only when `train` is set.

Split files use the BTS layout: one sample per line, "image_path depth_path [focal]", paths
relative to `root` and `depth_root`; a depth of "None" (KITTI frames without GT) drops the line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, augment
from .captions import CaptionError, caption_path, pick_caption, read_captions

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEPTH_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")


@dataclass(frozen=True)
class DatasetConfig:
    """Where a dataset lives and how to read it.

    name: registry key (see DATASETS). root: image root. split: BTS-style list file (required by
    nyu/kitti/void; optional for folder (a list of stems) and c3vd (a list of sequence folders)).
    depth_root: GT root, default root. depth_split: VOID only, a GT list parallel to `split` when
    that lists images alone. captions_root: caption tree, default root (c3vd: generated captions).
    default_caption: used when an image has no caption file; None makes that an error.
    depth_scale: raw value / depth_scale = depth; None takes the reader's (required for folder).
    augment: None takes the reader's defaults; used only when train is set.
    """

    name: str
    root: str
    split: Optional[str] = None
    train: bool = False
    depth_root: Optional[str] = None
    depth_split: Optional[str] = None
    captions_root: Optional[str] = None
    default_caption: Optional[str] = None
    depth_scale: Optional[float] = None
    augment: Optional[AugmentConfig] = None

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise KeyError(f"unknown dataset {self.name!r}; valid: {sorted(DATASETS)}")
        if self.depth_scale is not None and self.depth_scale <= 0:
            raise ValueError(f"depth_scale must be > 0, got {self.depth_scale}")


@dataclass(frozen=True)
class Item:
    """One sample on disk; `caption` is a fixed text that replaces the caption file."""

    image: Path
    depth: Path
    name: str
    caption_file: Optional[Path] = None
    caption: Optional[str] = None


# ------------------------------------------------------------------------------------------
# File reading
# ------------------------------------------------------------------------------------------

def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image file -> float32 [H,W,3] RGB in [0,1]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def read_depth_raw(path: Path) -> np.ndarray:
    """A single-channel depth file (PNG/TIFF of any bit depth, or .npy without pickles) -> float32 [H,W]."""
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise FileNotFoundError(f"cannot read depth map {path}")
    if array.ndim != 2:
        raise ValueError(f"depth map {path} must have one channel, got shape {array.shape}")
    return array.astype(np.float32)


def read_split(path: str | Path) -> List[List[str]]:
    """The whitespace-separated fields of each non-empty line of a split file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found")
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    return [row for row in rows if row]


def _rel(path: str) -> str:
    """A split-file path, relative (the NYU train list starts paths with '/')."""
    return path.lstrip("/")


def _stem_name(rel: str) -> str:
    return str(Path(rel).with_suffix(""))


# ------------------------------------------------------------------------------------------
# Base reader
# ------------------------------------------------------------------------------------------

class DepthDataset(Dataset):
    """Shared reading, captions and augmentation; subclasses list items and read depth."""

    depth_scale: float = 1.0
    brightness: Tuple[float, float] = (0.9, 1.1)

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        self.depth_root = Path(config.depth_root or config.root)
        self.captions_root = Path(config.captions_root) if config.captions_root else self.root
        self.scale = config.depth_scale or self.depth_scale
        self.augment_config = config.augment or AugmentConfig(brightness=self.brightness)
        self.items: List[Item] = self.list_items()
        if not self.items:
            raise ValueError(f"dataset {config.name!r} at {self.root} has no samples")
        self._rng_key: Optional[Tuple[int, int]] = None
        self._rng: Optional[np.random.Generator] = None

    # -- to override ------------------------------------------------------------------------
    def list_items(self) -> List[Item]:
        """The samples, in order. Default: a BTS split file."""
        return self._items_from_split()

    def load_depth(self, path: Path) -> np.ndarray:
        """float32 [H,W] depth, 0 = invalid."""
        return read_depth_raw(path) / self.scale

    def frame(self, image: np.ndarray, depth: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int, int, int]]:
        """Protocol crops / sizes -> image, depth and crop_box (top, left, frame_h, frame_w)."""
        return image, depth, (0, 0, depth.shape[0], depth.shape[1])

    def train_depth(self, depth: np.ndarray) -> np.ndarray:
        """Training-only GT edits (NYU's border)."""
        return depth

    # -- shared -----------------------------------------------------------------------------
    def _items_from_split(self) -> List[Item]:
        if self.config.split is None:
            raise ValueError(f"dataset {self.config.name!r} needs a split file (config.split)")
        items = []
        for row in read_split(self.config.split):
            if len(row) < 2:
                raise ValueError(f"split {self.config.split}: expected 'image depth [focal]', got {' '.join(row)!r}")
            if row[1] == "None":
                continue
            items.append(self._item(_rel(row[0]), _rel(row[1])))
        return items

    def _item(self, image_rel: str, depth_rel: str) -> Item:
        return Item(self.root / image_rel, self.depth_root / depth_rel, _stem_name(image_rel),
                    caption_file=caption_path(self.captions_root, image_rel))

    def rng(self) -> np.random.Generator:
        """A generator per process, seeded from torch's seed (differs per DataLoader worker and epoch)."""
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or key != self._rng_key:
            self._rng_key, self._rng = key, np.random.default_rng(key[1])
        return self._rng

    def caption(self, item: Item) -> str:
        """The item's fixed caption, a line of its caption file, or the configured default."""
        if item.caption is not None:
            return item.caption
        if item.caption_file is not None and item.caption_file.is_file():
            return pick_caption(read_captions(item.caption_file), self.config.train, self.rng())
        if self.config.default_caption is not None:
            return self.config.default_caption
        raise CaptionError(f"no caption for {item.name}: {item.caption_file} does not exist; set captions_root "
                           "to the RSA/TR2M caption tree, or default_caption")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.items[index]
        image, depth = read_rgb(item.image), self.load_depth(item.depth)
        if image.shape[:2] != depth.shape:
            raise ValueError(f"{item.name}: image {image.shape[:2]} and depth {depth.shape} sizes differ")
        image, depth, box = self.frame(image, depth)
        if self.config.train:
            depth = self.train_depth(depth)
            image, depth = augment(image, depth, self.augment_config, self.rng())
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "depth": torch.from_numpy(depth)[None],
            "mask": torch.from_numpy(depth > 0)[None],
            "caption": self.caption(item),
            "name": item.name,
            "dataset": self.config.name,
            "crop_box": torch.tensor(box, dtype=torch.int64),
        }


# ------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------

class NYUv2(DepthDataset):
    """NYU Depth v2, BTS "sync" / official_splits layout: 480x640, depth PNG in millimetres.

    Training zeroes GT outside rows 45:472, cols 43:608 (the Kinect registration border, as the
    authors do); evaluation keeps the raw GT and leaves cropping to the metric protocol.
    """

    depth_scale = 1000.0
    brightness = (0.75, 1.25)
    border = (45, 472, 43, 608)

    def train_depth(self, depth: np.ndarray) -> np.ndarray:
        r0, r1, c0, c1 = self.border
        kept = np.zeros_like(depth)
        kept[r0:r1, c0:c1] = depth[r0:r1, c0:c1]
        return kept


class KITTI(DepthDataset):
    """KITTI Eigen split (BTS lists): raw RGB under root, annotated GT PNG (/256 m) under depth_root.

    Image and GT are KB-cropped to the bottom-centre 352x1216 in training and evaluation.
    """

    depth_scale = 256.0
    kb_size = (352, 1216)

    def frame(self, image, depth):
        height, width = depth.shape
        crop_h, crop_w = self.kb_size
        if height < crop_h or width < crop_w:
            raise ValueError(f"KITTI frame {height}x{width} is smaller than the KB crop {crop_h}x{crop_w}")
        top, left = height - crop_h, (width - crop_w) // 2
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        return image[window], depth[window], (top, left, height, width)


class VOID(DepthDataset):
    """VOID (480x640 indoor/outdoor, GT PNG /256 m). `split` pairs "image depth", or lists images
    with `depth_split` listing the GT files line by line (the VOID release's own lists)."""

    depth_scale = 256.0

    def list_items(self) -> List[Item]:
        if self.config.depth_split is None:
            return self._items_from_split()
        images = [row[0] for row in read_split(self.config.split)] if self.config.split else []
        depths = [row[0] for row in read_split(self.config.depth_split)]
        if len(images) != len(depths):
            raise ValueError(f"VOID lists differ in length: {len(images)} images, {len(depths)} depths")
        return [self._item(_rel(i), _rel(d)) for i, d in zip(images, depths)]


# C3VD: the authors' sequence split (indices into the sorted sequence folders) and caption
# template. "transcending" is their word; it is kept because the released head saw it.
C3VD_TRAIN = (1, 3, 4, 6, 7, 8, 10, 11, 13, 14, 15, 17, 18, 20, 22)
C3VD_TEST = (0, 2, 5, 9, 12, 16, 19, 21)
C3VD_COLON = {"cecum": "cecum", "desc": "descending colon", "sigmoid": "sigmoid colon", "trans": "transcending colon"}
C3VD_TEXTURE = {"1": "one", "2": "two", "3": "three", "4": "four"}


def c3vd_caption(sequence: str) -> str:
    """The caption of a C3VD sequence folder named like 'cecum_t1_a'."""
    parts = sequence.split("_")
    try:
        colon, texture = C3VD_COLON[parts[0]], C3VD_TEXTURE[parts[1][1]]
    except (KeyError, IndexError):
        raise ValueError(f"C3VD sequence {sequence!r} is not named <colon>_t<texture>_...") from None
    return f"The image shows a medical scene of {colon} with texture type {texture}."


class C3VD(DepthDataset):
    """C3VD colonoscopy: root/<sequence>/NNNN_color.png + NNNN_depth.tiff.

    Depth is TIFF channel 0 (BGR order, as the authors read it) x 100/65535, i.e. MILLIMETRES
    (0-100 mm), kept in that unit as the authors trained and evaluated it. Frames are brought to the
    authors' 480x640 (GT nearest, image area-averaged). Captions are generated from the sequence
    name unless captions_root is set. `split` may list sequence folders; otherwise the authors'
    index split of the sorted folders is used.
    """

    depth_scale = 65535.0 / 100.0
    frame_size = (480, 640)

    def _sequences(self) -> List[str]:
        if self.config.split:
            return [row[0] for row in read_split(self.config.split)]
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        indices = C3VD_TRAIN if self.config.train else C3VD_TEST
        if len(folders) <= max(indices):
            raise ValueError(f"C3VD root {self.root} has {len(folders)} sequences; the authors' split needs "
                             f"{max(indices) + 1} (or pass a split file of sequence folders)")
        return [folders[i] for i in indices]

    def list_items(self) -> List[Item]:
        items = []
        for sequence in self._sequences():
            for color in sorted((self.root / sequence).glob("*_color.png")):
                depth = color.with_name(color.name.replace("_color.png", "_depth.tiff"))
                if depth.is_file():
                    items.append(self._c3vd_item(sequence, color, depth))
        return items

    def _c3vd_item(self, sequence: str, color: Path, depth: Path) -> Item:
        rel = f"{sequence}/{color.name}"
        if self.config.captions_root:
            return Item(color, depth, _stem_name(rel), caption_file=caption_path(self.captions_root, rel))
        return Item(color, depth, _stem_name(rel), caption=c3vd_caption(sequence))

    def load_depth(self, path: Path) -> np.ndarray:
        array = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if array is None:
            raise FileNotFoundError(f"cannot read depth map {path}")
        return array[..., 0].astype(np.float32) / self.scale

    def frame(self, image, depth):
        height, width = self.frame_size
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
        return image, depth, (0, 0, height, width)


class FolderDataset(DepthDataset):
    """A generic folder: root/rgb/<stem>.{png,jpg}, root/depth/<stem>.{png,tif,tiff,npy},
    root/captions/<stem>.txt. depth_scale must be declared (raw / depth_scale = metres; 1 for
    float .npy in metres). `split` optionally lists the stems to use, one per line."""

    def __init__(self, config: DatasetConfig) -> None:
        if config.depth_scale is None:
            raise ValueError("folder datasets need depth_scale (raw depth value / depth_scale = metres)")
        super().__init__(config)

    def list_items(self) -> List[Item]:
        rgb = self.root / "rgb"
        if not rgb.is_dir():
            raise FileNotFoundError(f"folder dataset {self.root} has no rgb/ folder")
        images = {p.stem: p for p in sorted(rgb.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        stems = [row[0] for row in read_split(self.config.split)] if self.config.split else sorted(images)
        missing = [s for s in stems if s not in images]
        if missing:
            raise FileNotFoundError(f"no image in {rgb} for {missing[:5]}")
        return [self._folder_item(images[s]) for s in stems]

    def _folder_item(self, image: Path) -> Item:
        depth = self._depth_file(image.stem)
        captions_root = Path(self.config.captions_root) if self.config.captions_root else self.root / "captions"
        return Item(image, depth, image.stem, caption_file=captions_root / f"{image.stem}.txt")

    def _depth_file(self, stem: str) -> Path:
        for ext in DEPTH_EXTENSIONS:
            candidate = self.depth_root / "depth" / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no depth map for {stem!r} in {self.depth_root / 'depth'} "
                                f"(extensions {', '.join(DEPTH_EXTENSIONS)})")


DATASETS: Dict[str, Type[DepthDataset]] = {
    "nyu": NYUv2,
    "kitti": KITTI,
    "void": VOID,
    "c3vd": C3VD,
    "folder": FolderDataset,
}


def build_dataset(config: DatasetConfig | None = None, **kwargs: Any) -> DepthDataset:
    """A reader from a DatasetConfig, or from its fields: build_dataset(name="nyu", root=..., split=...)."""
    config = config or DatasetConfig(**kwargs)
    return DATASETS[config.name](config)


def list_datasets() -> Sequence[str]:
    return sorted(DATASETS)
