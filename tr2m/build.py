"""Building TR2M models: from a preset, a checkpoint, or a saved folder."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Tuple

import torch

from .checkpoint import load_head, read_config, save_checkpoint
from .config import TR2MConfig, get_preset
from .encoders import ImageEncoder, RelativeDepth, TextEncoder
from .head import ScaleMapModel
from .model import TR2M

HEAD_FILE = "head.safetensors"


def create_model(
    name: Optional[str] = "paper",
    *,
    pretrained: bool = True,
    checkpoint: Optional[str | os.PathLike] = None,
    input_size: Optional[Tuple[int, int]] = None,
    relative_source: Optional[str] = None,
    image_source: Optional[str] = None,
    text_source: Optional[str] = None,
    device: str | torch.device = "cpu",
) -> TR2M:
    """Build a TR2M model.

    name: a preset (`tr2m.list_presets()`); None takes the config stored in `checkpoint`.
    pretrained: load the frozen encoders from their sources (hub ids or local folders); False
        builds them from the config with random weights (offline).
    checkpoint: head weights: the authors' .pth, a training dict, or our .safetensors.
    *_source: override where each encoder comes from (hub id or folder).
    """
    config = _resolve_config(name, checkpoint)
    if input_size is not None:
        config = config.replace(input_size=input_size)
    config = _with_sources(config, relative_source, image_source, text_source)
    model = TR2M(
        config=config,
        relative=RelativeDepth.from_config(config.relative, pretrained=pretrained),
        image_encoder=ImageEncoder.from_config(config.image, pretrained=pretrained),
        text_encoder=TextEncoder.from_config(config.text, pretrained=pretrained),
        head=ScaleMapModel(config.head),
    )
    if checkpoint is not None:
        load_head(model.head, checkpoint)
    return model.to(device).eval()


def _resolve_config(name: Optional[str], checkpoint) -> TR2MConfig:
    stored = read_config(checkpoint) if checkpoint is not None else None
    if name is None:
        if stored is None:
            raise ValueError("no preset name given and the checkpoint carries no config: pass a preset name")
        return stored
    return get_preset(name)


def _with_sources(config: TR2MConfig, relative: Optional[str], image: Optional[str], text: Optional[str]) -> TR2MConfig:
    changes = {}
    for field, source in (("relative", relative), ("image", image), ("text", text)):
        if source:
            changes[field] = dataclasses.replace(getattr(config, field), source=str(source))
    return config.replace(**changes) if changes else config


def save_pretrained(model: TR2M, directory: str | os.PathLike) -> Path:
    """Write a self-contained folder: each encoder (config + safetensors) and the head + config."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for attr, sub in (("relative", "relative"), ("image_encoder", "image"), ("text_encoder", "text")):
        getattr(model, attr).save_pretrained(directory / sub)
    save_checkpoint(model.head, model.config, directory / HEAD_FILE)
    return directory


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> TR2M:
    """Load a folder written by `save_pretrained` (no hub access needed)."""
    directory = Path(directory)
    if not (directory / HEAD_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a saved TR2M folder (no {HEAD_FILE})")
    return create_model(
        None, checkpoint=directory / HEAD_FILE, device=device,
        relative_source=str(directory / "relative"), image_source=str(directory / "image"),
        text_source=str(directory / "text"),
    )


def randomize_for_demo(model: TR2M, seed: int = 0) -> TR2M:
    """Overwrite some weights of a random-init model with random ones that make its outputs vary
    over the image (demo bundles, export parity checks); returns the same model.

    A fresh head starts from constant maps (its last convs are zeroed) and a random Depth
    Anything's disparity is ~1e-7, so an untrained model would print one flat depth and a
    parity check would only see the constant B. This gives Depth Anything's neck and head convs
    a Kaiming scale, so D_r varies at order 1, and the heads' last convs random weights scaled so
    that the exponent of A and B has a standard deviation of 0.5 on a noise image: A and B then
    span about e^±1.5 around their coefficients, as a trained head's do, instead of overflowing.
    Never use it on trained weights: it overwrites them.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        depth_anything = model.relative.model
        for module in list(depth_anything.neck.modules()) + list(depth_anything.head.modules()):
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        lasts = (model.head.output_conv_scale2[2], model.head.output_conv_shift2[2])
        for last in lasts:
            last.weight.copy_(torch.randn(last.weight.shape, generator=gen))
        spreads = _exponent_spreads(model, lasts, gen)
        for last, spread in zip(lasts, spreads):
            last.weight.mul_(0.5 / max(spread, 1e-12))
    return model


def _exponent_spreads(model: TR2M, lasts, gen: torch.Generator) -> list:
    """Standard deviation of each last conv's output (the exponent of A or B) on a noise image."""
    spreads = {}
    hooks = [last.register_forward_hook(lambda m, i, o, k=k: spreads.__setitem__(k, float(o.std())))
             for k, last in enumerate(lasts)]
    try:
        image = torch.randn(1, 3, *model.config.input_size, generator=gen)
        model(image.to(model.device), torch.randn(1, model.config.text.projection_dim, generator=gen).to(model.device))
    finally:
        for hook in hooks:
            hook.remove()
    return [spreads[k] for k in range(len(lasts))]
