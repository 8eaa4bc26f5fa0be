"""The battery of bad inputs and faults (tests/battery): every one a clear error or a correct result.

Each case feeds one broken or odd input (videos, images, checkpoints, bundles, engines, captions,
caches, outputs, Ctrl-C) to `tr2m-run`, `tr2m-export`, `tr2m-eval`, `tr2m-train` or the Python
API, and is judged by tests/battery/harness.py: a one-line error naming the problem and the fix
with a non-zero exit (or a documented exception), no traceback, no temporary or half-written
file, no poisoned cache entry. `python scripts/battery.py` prints the same cases as a table.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from runtime.bundle import Bundle
from tests.battery import CASES, GOOD, SKIPPED, Context, run_case
from tests.battery.harness import build_engine_bundle


@pytest.fixture(scope="module")
def battery(tiny_bundle, tmp_path_factory):
    """(bundle, shared caption cache, lazily built RTX engine bundle), shared by the cases."""
    root = tmp_path_factory.mktemp("battery")
    bundle = Path(tiny_bundle.bundle)
    before = sorted(p.name for p in bundle.rglob("*"))
    engine = functools.cache(lambda: build_engine_bundle(bundle, root / "engine-bundle"))
    yield bundle, root / "cache", engine
    Bundle.open(bundle)  # no case may change the shared bundle: it still verifies ...
    assert sorted(p.name for p in bundle.rglob("*")) == before  # ... and holds nothing new


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_answered_clearly_and_loses_nothing(case, battery, tmp_path):
    bundle, cache, engine = battery
    ctx = Context(bundle=bundle, root=tmp_path, cache=cache, engine_bundle=engine)
    outcome = run_case(case, ctx)
    if outcome.verdict == SKIPPED:
        pytest.skip(outcome.message)
    if case.known and outcome.verdict not in GOOD:
        pytest.xfail(f"known, reported: {case.known}")
    assert outcome.verdict in GOOD, f"{outcome.verdict}: {outcome.message}\n{outcome.details}"
