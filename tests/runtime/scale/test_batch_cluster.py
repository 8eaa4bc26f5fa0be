"""tr2m-batch on a multi-node Ray cluster simulated on this machine (ray.cluster_utils.Cluster:
a head with no CPU for work and two worker nodes); one worker node is killed mid-video."""
from __future__ import annotations

from pathlib import Path

import pytest

from .test_batch import _assert_only_complete_folders, batch_run, run_killing_a_worker, videos  # noqa: F401


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="needs the Ray extra")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 100 << 20,
                                                             "include_dashboard": False})
    # The driver joins while the head is the only node: joined later, it could attach to the worker
    # node that then runs the actor, and Ray refuses to remove the node its driver is on.
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=100 << 20) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def _node_of(cluster, nodes, pid: int):
    """The worker node whose raylet started process ``pid``."""
    import psutil

    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    for node in nodes:
        if node.all_processes["raylet"][0].process.pid in ancestors:
            return node
    raise AssertionError(f"process {pid} belongs to no worker node")


@pytest.mark.slow
def test_a_node_killed_mid_video_loses_nothing(cluster, tiny_bundle, videos, tmp_path):  # noqa: F811
    cluster, nodes = cluster
    run = batch_run(tiny_bundle.bundle, videos[1:], tmp_path / "out", tmp_path / "cache", workers=1)
    killed = []

    def kill_node(pid: int) -> None:
        node = _node_of(cluster, nodes, pid)
        cluster.remove_node(node, allow_graceful=False)
        killed.append(node)

    results, victim, name = run_killing_a_worker(run, kill_node)
    assert killed
    assert sorted(r.name for r in results) == sorted(Path(v).stem for v in videos[1:])
    assert all(r.status == "done" and r.frames == 24 for r in results), results
    assert _assert_only_complete_folders(run.out) == sorted(r.name for r in results)
