"""Configuration dataclasses and the preset registry.

A preset fixes the three frozen encoders (where to load them from and, for offline random
initialisation, their architecture), the trainable head's widths and the input size.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RelativeDepthConfig:
    """Depth Anything (transformers `DepthAnythingForDepthEstimation`), relative type.

    `source` is a hub id or a local folder; the remaining fields describe the architecture
    used when the model is built with random weights (offline tests and demos).
    """

    source: str = "LiheYoung/depth-anything-small-hf"
    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6
    # Depth Anything v1 feeds the neck from the LAST four blocks; V2 uses [3, 6, 9, 12].
    out_indices: Tuple[int, ...] = (9, 10, 11, 12)
    neck_hidden_sizes: Tuple[int, ...] = (48, 96, 192, 384)
    reassemble_hidden_size: int = 384
    fusion_hidden_size: int = 64
    head_hidden_size: int = 32
    image_size: int = 518


@dataclass(frozen=True)
class ImageEncoderConfig:
    """DINOv2 without registers (transformers `Dinov2Model`): last block, final norm, patch tokens."""

    source: str = "facebook/dinov2-large"
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    mlp_ratio: int = 4
    image_size: int = 518


@dataclass(frozen=True)
class TextEncoderConfig:
    """OpenAI CLIP text tower (transformers `CLIPTextModelWithProjection`), pooled + projected."""

    source: str = "openai/clip-vit-large-patch14"
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    projection_dim: int = 768
    vocab_size: int = 49408
    context_length: int = 77


@dataclass(frozen=True)
class HeadConfig:
    """Widths of the released `ScaleMapModel` head."""

    in_channels: int = 1024
    mid_channels: int = 192
    text_channels: int = 768
    features: int = 128
    num_heads: int = 8
    scale_coef: float = 0.01
    shift_coef: float = 0.01

    def __post_init__(self):
        if self.in_channels % self.num_heads:
            raise ValueError(f"head in_channels {self.in_channels} is not divisible by num_heads {self.num_heads}")
        if self.features % 2:
            raise ValueError(f"head features must be even (the heads use features // 2), got {self.features}")


@dataclass(frozen=True)
class TR2MConfig:
    """Everything needed to rebuild a TR2M model (the head's weights aside)."""

    name: str = "paper"
    input_size: Tuple[int, int] = (434, 560)
    relative: RelativeDepthConfig = field(default_factory=RelativeDepthConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    # Fixed colour range (metres) of depth videos, written into the bundle manifest for the runtime:
    # the scenes the preset's input size was chosen for (indoor rooms; KITTI roads up to the 80 m
    # evaluation cap). None: no metric scale to show (random weights): the runtime fixes a range
    # from the first frame.
    display_range_m: Optional[Tuple[float, float]] = (0.5, 10.0)

    def __post_init__(self):
        if self.display_range_m is not None and not 0 <= self.display_range_m[0] < self.display_range_m[1]:
            raise ValueError(f"display_range_m must be (min, max) metres with 0 <= min < max, got {self.display_range_m}")
        height, width = self.input_size
        if height % PATCH_SIZE or width % PATCH_SIZE or height <= 0 or width <= 0:
            raise ValueError(
                f"input size {height}x{width} must be positive multiples of {PATCH_SIZE} "
                f"(e.g. {round_to_patch(height)}x{round_to_patch(width)})"
            )
        if self.head.in_channels != self.image.hidden_size:
            raise ValueError(f"head in_channels {self.head.in_channels} != image encoder width {self.image.hidden_size}")
        if self.head.text_channels != self.text.projection_dim:
            raise ValueError(f"head text_channels {self.head.text_channels} != text embedding {self.text.projection_dim}")

    @property
    def patch_grid(self) -> Tuple[int, int]:
        return self.input_size[0] // PATCH_SIZE, self.input_size[1] // PATCH_SIZE

    def replace(self, **changes: Any) -> "TR2MConfig":
        """A copy with top-level fields replaced; `input_size` may be given as (H, W)."""
        if "input_size" in changes:
            changes["input_size"] = tuple(int(v) for v in changes["input_size"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TR2MConfig":
        sections = {"relative": RelativeDepthConfig, "image": ImageEncoderConfig, "text": TextEncoderConfig, "head": HeadConfig}
        kwargs = dict(data)
        for key, section_cls in sections.items():
            if key in kwargs:
                kwargs[key] = section_cls(**_tuples(kwargs[key]))
        return cls(**_tuples(kwargs))

    @classmethod
    def from_json(cls, text: str) -> "TR2MConfig":
        return cls.from_dict(json.loads(text))


def _tuples(data: Dict[str, Any]) -> Dict[str, Any]:
    # JSON turns tuples into lists; frozen dataclasses keep tuples so configs stay hashable.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def round_to_patch(value: int) -> int:
    """The nearest positive multiple of the patch size."""
    return max(PATCH_SIZE, int(round(value / PATCH_SIZE)) * PATCH_SIZE)


_PRESETS: Dict[str, Callable[[], TR2MConfig]] = {}


def register_preset(fn: Callable[[], TR2MConfig]) -> Callable[[], TR2MConfig]:
    _PRESETS[fn.__name__] = fn
    return fn


def list_presets() -> Tuple[str, ...]:
    return tuple(sorted(_PRESETS))


def get_preset(name: str) -> TR2MConfig:
    """The config of a registered preset; unknown names list the valid ones."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}") from None


@register_preset
def paper() -> TR2MConfig:
    """The released combination: DA v1 ViT-S, DINOv2 ViT-L/14, CLIP ViT-L/14 text; NYU-like 434x560."""
    return TR2MConfig(name="paper", input_size=(434, 560))


@register_preset
def kitti() -> TR2MConfig:
    """The paper preset at the authors' KITTI size."""
    return TR2MConfig(name="kitti", input_size=(350, 1204), display_range_m=(1.0, 80.0))


@register_preset
def sunrgbd() -> TR2MConfig:
    """The paper preset at the authors' SUN RGB-D size."""
    return TR2MConfig(name="sunrgbd", input_size=(518, 728))


@register_preset
def paper_v2() -> TR2MConfig:
    """Depth Anything V2 Small as the relative model (its neck reads blocks 3, 6, 9, 12)."""
    relative = RelativeDepthConfig(source="depth-anything/Depth-Anything-V2-Small-hf", out_indices=(3, 6, 9, 12))
    return TR2MConfig(name="paper_v2", input_size=(434, 560), relative=relative)


@register_preset
def tiny() -> TR2MConfig:
    """The same classes with tiny widths: for tests and offline demos only (random weights)."""
    return TR2MConfig(
        name="tiny",
        input_size=(56, 70),
        display_range_m=None,
        relative=RelativeDepthConfig(
            source="", hidden_size=32, num_layers=4, num_heads=2, out_indices=(1, 2, 3, 4),
            neck_hidden_sizes=(8, 16, 32, 64), reassemble_hidden_size=32, fusion_hidden_size=16,
            head_hidden_size=8,
        ),
        image=ImageEncoderConfig(source="", hidden_size=64, num_layers=2, num_heads=4),
        text=TextEncoderConfig(source="", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, projection_dim=32),
        head=HeadConfig(in_channels=64, mid_channels=16, text_channels=32, features=16, num_heads=4),
    )
