"""The interface every backend implements."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping

import numpy as np


class Backend:
    """Runs one graph of a bundle. Subclasses set `name` and `requirement` (what it needs)."""

    name = "base"
    requirement = ""

    @classmethod
    def available(cls, bundle) -> bool:
        """Whether this backend can run `bundle` on this machine."""
        raise NotImplementedError

    @classmethod
    def load(cls, bundle, graph: str) -> "Backend":
        """Open graph `graph` (a manifest graph name, e.g. "image") of `bundle`."""
        raise NotImplementedError

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Named float32/int64 arrays in -> named output arrays."""
        raise NotImplementedError

    def warmup(self, feeds: Mapping[str, np.ndarray], runs: int = 2) -> None:
        for _ in range(runs):
            self.run(feeds)

    @staticmethod
    def graph_file(bundle, graph: str) -> Path:
        return bundle.graph_path(graph)
