"""Data: RGB-depth-caption readers (a registry by name), captions and training augmentations."""
from .augment import NO_AUGMENT, AugmentConfig, augment
from .captions import CaptionError, caption_path, pick_caption, read_captions
from .datasets import (
    DATASETS, C3VD, KITTI, VOID, DatasetConfig, DepthDataset, FolderDataset, Item, NYUv2, build_dataset,
    c3vd_caption, list_datasets, read_depth_raw, read_rgb, read_split,
)

__all__ = [
    "NO_AUGMENT", "AugmentConfig", "augment", "CaptionError", "caption_path", "pick_caption", "read_captions",
    "DATASETS", "C3VD", "KITTI", "VOID", "DatasetConfig", "DepthDataset", "FolderDataset", "Item", "NYUv2",
    "build_dataset", "c3vd_caption", "list_datasets", "read_depth_raw", "read_rgb", "read_split",
]
