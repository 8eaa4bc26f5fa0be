"""A video sink that stamps a label (e.g. "UNTRAINED") on every frame, so a picture of meaningless
depth can never be mistaken for a real result once it leaves the terminal."""
from __future__ import annotations

import cv2
import numpy as np

from .sinks import VideoSink
from .sources import Frame


class LabelledVideoSink(VideoSink):
    """A VideoSink that stamps ``label`` in the top-left corner of every frame ("" for none)."""

    def __init__(self, path, *, label: str = "", **options) -> None:
        super().__init__(path, **options)
        self.label = label

    def compose(self, frame: Frame, depth_m: np.ndarray) -> np.ndarray:
        picture = super().compose(frame, depth_m)
        if self.label:
            stamp(picture, self.label)
        return picture


def stamp(picture: np.ndarray, text: str) -> None:
    """Write ``text`` in red on a black box in the top-left corner of uint8 [H, W, 3], in place."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, picture.shape[0] / 500)
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(4, h // 3)
    cv2.rectangle(picture, (0, 0), (w + 2 * pad, h + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(picture, text, (pad, h + pad), font, scale, (255, 40, 40), thick, cv2.LINE_AA)
