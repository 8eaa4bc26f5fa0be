"""Joining a Ray cluster, or starting a small local one for the length of a command.

The same command runs on a laptop (no address: a local Ray is started and stopped with it) and
on a cluster (``--address auto`` on a cluster node, or ``ray://head:10001`` from outside), with
no code change. Ray is an optional extra; a missing Ray is a one-line error naming it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

from ..errors import ClusterError

RAY_EXTRA = 'pip install "tr2m[ray]"'


def require(*modules: str) -> None:
    """Import each module (e.g. "ray", "ray.serve", "fastapi") or raise a one-line ClusterError
    that names the extra to install."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ClusterError(f"{name} is not installed ({e}); install the Ray extra: {RAY_EXTRA}") from None


@dataclass(frozen=True)
class ClusterOptions:
    """Where to run. address: None starts a local Ray for this command; "auto" joins the cluster
    this machine belongs to; "ray://host:10001" joins a remote one through Ray Client.
    num_cpus / object_store_mb size the local Ray only (a cluster has its own)."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None
    object_store_mb: int = 256

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ClusterError(f"num_cpus must be at least 1, got {self.num_cpus}")
        if self.object_store_mb < 80:
            raise ClusterError(f"object_store_mb must be at least 80 (Ray's minimum), got {self.object_store_mb}")


class RayCluster:
    """A context manager: connects on enter; on exit shuts Ray down only if it connected it.

    A Ray already initialized in this process (a notebook, a test fixture) is used as it is.
    """

    def __init__(self, options: ClusterOptions = ClusterOptions()) -> None:
        self.options = options
        self.owned = False

    def __enter__(self) -> "RayCluster":
        require("ray")
        import ray

        if ray.is_initialized():
            return self
        o = self.options
        # Ray rejects sizing arguments when it joins a cluster: pass them to a local Ray only.
        local = {} if o.address else dict(num_cpus=o.num_cpus, object_store_memory=o.object_store_mb << 20,
                                          include_dashboard=False, log_to_driver=False)
        try:  # "local": a new Ray even when another one runs on this machine (ray.init would join it)
            ray.init(address=o.address or "local", **local)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {o.address}" if o.address else "a local Ray"
            raise ClusterError(f"cannot start or join {where}: {e}") from None
        self.owned = True
        return self

    def __exit__(self, *exc) -> None:
        if self.owned:
            import ray

            ray.shutdown()
            self.owned = False
