"""TR2M: text-guided relative-to-metric depth (CVPR 2026), in PyTorch."""
from .build import create_model, from_pretrained, randomize_for_demo, save_pretrained
from .checkpoint import CheckpointError, load_head, read_checkpoint, save_checkpoint, save_released_format
from .config import TR2MConfig, get_preset, list_presets, register_preset
from .model import TR2M, metric_depth

__all__ = [
    "TR2M", "TR2MConfig", "CheckpointError", "create_model", "from_pretrained", "get_preset", "list_presets",
    "load_head", "metric_depth", "randomize_for_demo", "read_checkpoint", "register_preset", "save_checkpoint",
    "save_pretrained", "save_released_format",
]
