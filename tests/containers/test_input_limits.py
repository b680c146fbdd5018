"""Inside a step container, prepare's input budget follows the container's own memory limit."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.containers.conftest import image

pytestmark = pytest.mark.container


def test_the_default_input_budget_is_a_quarter_of_the_containers_memory_limit(docker_cli, data_dir: Path):
    """A 128-byte .npy whose header claims 20,000 x 1,000 float64 (160 MB): refused under --memory
    400m (budget 100 MiB, a quarter), with nothing written; the default 2g step memory admits the header."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (20_000, 1_000)})
    (data_dir / "claims.npy").write_bytes(header.getvalue())
    run = [docker_cli, "run", "--rm", "--network", "none", "--user", "10001:10001", "-v", f"{data_dir}:/data"]
    args = [image("prepare"), "--run-id", "bomb", "--dataset", "/data/claims.npy", "--no-cache"]

    small = subprocess.run([*run, "--memory", "400m", *args], capture_output=True, text=True, timeout=120)
    assert small.returncode == 2, small.stderr
    lines = small.stderr.strip().splitlines()
    assert len(lines) == 1 and "104,857,600" in lines[0] and "--max-input-bytes" in lines[0], lines
    assert not (data_dir / "runs/bomb/prepare").exists()

    large = subprocess.run([*run, "--memory", "2g", *args], capture_output=True, text=True, timeout=120)
    assert "104,857,600" not in large.stderr and "--max-input-bytes" not in large.stderr, large.stderr
