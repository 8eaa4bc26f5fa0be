"""The interface every backend implements."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import BundleError


class BackendUnavailable(BundleError):
    """This backend cannot run the bundle here (engines for another GPU, a provider ONNX Runtime
    did not give, CUDA that cannot start); `--backend auto` moves on to the next one."""


class Backend:
    """Runs one graph of a bundle. Subclasses set `name` and `requirement` (what it needs), and
    `options` when they take settings (a frozen dataclass; see `configured`)."""

    name = "base"
    requirement = ""
    options = None
    # graph -> the bundle graphs that serve it, best first (e.g. a CPU-specific INT8 graph)
    serving: Dict[str, Tuple[str, ...]] = {}

    @classmethod
    def available(cls, bundle) -> bool:
        """Whether this backend is worth trying here (its library is installed, the bundle has
        what it runs); cheap and silent. `refusal` then says whether it really can."""
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls, bundle) -> str:
        """One line: what is missing for this backend to run `bundle` here (when not `available`)."""
        return cls.requirement

    @classmethod
    def configured(cls, options) -> type:
        """This backend class with `options` (its options dataclass) applied to every `load`."""
        if cls.options is None:
            raise TypeError(f"the {cls.name} backend takes no options")
        return type(cls.__name__, (cls,), {"options": options})

    @classmethod
    def serving_graph(cls, bundle, graph: str) -> Optional[str]:
        """The bundle graph this backend runs for `graph` (see `serving`), or None if it has none."""
        return next((g for g in cls.serving.get(graph, (graph,)) if bundle.has_graph(g)), None)

    @classmethod
    def provides(cls, bundle, graph: str) -> bool:
        """Whether the bundle holds something this backend runs for `graph` (an ONNX graph here)."""
        return cls.serving_graph(bundle, graph) is not None

    @classmethod
    def refusal(cls, bundle, graphs: Sequence[str]) -> Optional[str]:
        """Why this backend cannot run `graphs` of `bundle` here (one line), or None if it can."""
        missing = [g for g in graphs if not cls.provides(bundle, g)]
        return f"the bundle has no {', '.join(missing)} graph" if missing else None

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

    def close(self) -> None:
        """Release what the backend holds outside Python (device memory, streams)."""

    def describe(self) -> Dict[str, str]:
        """What this graph runs on, for the run summary (device, inference precision, ...)."""
        return {}

    @classmethod
    def graph_file(cls, bundle, graph: str) -> Path:
        return bundle.graph_path(cls.serving_graph(bundle, graph) or graph)
