"""The benchmark runs at tiny sizes and reports what DESIGN §7 asks for: each section, the
measured process's own peak memory (not the benchmark's), and every target with its
figure. No timing is asserted (machines are shared and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import REPO


def test_a_tiny_run_reports_every_section_and_each_commands_own_memory(
        tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--sizes", "100", "--msp",
         "20x5", "--repeat", "1", "--no-naive", "--pinned", "0", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert {"date", "machine", "results", "msp", "targets", "benchmark_peak_mib"} <= report.keys()
    assert {"arch", "cpu", "cores"} <= report["machine"].keys()
    ops = {r["op"] for r in report["results"]}
    assert {"floor", "validate", "plan", "apply-new", "apply-1%"} <= ops, ops
    floor = next(r for r in report["results"] if r["op"] == "floor")
    # the floor alone is a small process: the benchmark's own memory is not counted
    assert 0 < floor["peak_mib"] < report["benchmark_peak_mib"], (floor, report)
    (shape,) = report["msp"]
    assert shape["shape"] == "20x5"
    for step in ("validate", "plan", "apply"):
        assert shape[step]["dir"]["median_s"] > 0 and shape[step]["one"]["median_s"] > 0
    assert all({"target", "value", "limit", "pass"} <= t.keys() for t in report["targets"])
    assert out.with_suffix(".md").read_text().strip()
