"""The benchmark harness runs and prints its tables (a smoke test: one small scale run, no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.containers.conftest import REPO

pytestmark = pytest.mark.container


def test_the_harness_prints_the_scale_table_and_the_targets(docker_cli, tmp_path):
    plot = tmp_path / "scale.png"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--section", "scale", "--sizes", "500",
                             "--repeats", "1", "--plot", str(plot), "--results", str(tmp_path / "RESULTS.md")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scale = next(block for block in result.stdout.split("### ") if block.startswith("Scale"))
    header, rule, row = [line for line in scale.splitlines() if line.startswith("|")]
    assert header.count("|") == rule.count("|") == row.count("|") == 13 and row.startswith("| 500 |")
    assert ", 0 MiB" not in row  # every step's peak RSS was measured
    # the targets table judges the memory target on what was measured (the verdict itself is not
    # asserted: 500 rows are a smoke test, not the target's size)
    (rss,) = [line for line in result.stdout.splitlines() if line.startswith("| 500 x 64: cluster peak RSS")]
    assert re.fullmatch(r"\| .+ \| [1-9][0-9]* MiB = [0-9]+\.[0-9]{2}× \| (met|NOT met) \|", rss), rss
    assert plot.stat().st_size > 10_000
    written = (tmp_path / "RESULTS.md").read_text()
    assert written.startswith("<!-- python -m benchmarks: begin -->") and "### Scale" in written
