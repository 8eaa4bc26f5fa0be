"""bench.measure and the section writers of the benchmark scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_a_worker_reports_its_own_peak_not_its_parents():
    held = np.ones(400_000_000 // 8)  # 400 MB resident in this (parent) process
    code = "from bench.measure import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout)
    assert held.sum() > 0 and child < 300  # ru_maxrss would say >= 400 MB: Linux carries it across fork/exec


def test_cpu_limit_section_keeps_the_generated_block_after_it(tmp_path):
    from bench.cpu_limit import SECTION, write_section

    results = tmp_path / "RESULTS.md"
    footprint = "<!-- tr2m-footprint: begin (generated) -->\n## Footprint\nrows\n<!-- tr2m-footprint: end -->\n"
    results.write_text(f"# results\n\n{SECTION}\nold table\n\n{footprint}")
    write_section(results, f"{SECTION}\nnew table\n")
    text = results.read_text()
    assert footprint in text and "old table" not in text and text.rstrip().endswith("new table")


def test_clock_note_only_when_the_gemm_beats_the_nominal_peak():
    from bench.cpu_limit import _clock_note

    cpu = {"mhz": 2445.0}
    assert _clock_note({"measured": {"fp32": 120.0}, "theoretical": {"fp32": 156.5}}, cpu) == []
    note = _clock_note({"measured": {"fp32": 190.1}, "theoretical": {"fp32": 156.5}}, cpu)
    assert len(note) == 1 and ">= 2.97 GHz" in note[0]
