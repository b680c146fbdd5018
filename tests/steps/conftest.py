"""What the step tests share: invoking a step's CLI on a data root, reading and snapshotting runs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterflow_steps.cluster.cli import main as cluster
from clusterflow_steps.evaluate.cli import main as evaluate
from clusterflow_steps.prepare.cli import main as prepare
from clusterflow_steps.report.cli import main as report

COMMANDS: dict[str, click.Command] = {"prepare": prepare, "cluster": cluster, "evaluate": evaluate,
                                      "report": report}


@dataclass
class Steps:
    """Runs the step CLIs in-process against one data root, like the containers do against /data."""

    root: Path
    run_id: str = "t"

    def __call__(self, step: str, *args: str, run_id: str | None = None, env: dict[str, str] | None = None,
                 expect: int | None = 0) -> Result:
        """Invoke ``step``; check its exit code unless ``expect`` is ``None``."""
        argv = ["--run-id", run_id or self.run_id, "--data-root", str(self.root), *args]
        result = CliRunner().invoke(COMMANDS[step], argv, env=env, prog_name=step, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    def path(self, relative: str, run_id: str | None = None) -> Path:
        return self.root / "runs" / (run_id or self.run_id) / relative

    def manifest(self, step_dir: str, run_id: str | None = None) -> dict[str, Any]:
        return json.loads(self.path(f"{step_dir}/manifest.json", run_id).read_text())

    def array(self, relative: str, run_id: str | None = None) -> np.ndarray:
        return np.load(self.path(relative, run_id))


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the environment of whoever runs the tests must not leak into them."""
    for name in [n for n in os.environ if n.startswith("CLUSTERFLOW_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def steps(tmp_path: Path) -> Steps:
    return Steps(tmp_path / "data")


@pytest.fixture
def blobs(steps: Steps) -> Steps:
    """A prepared run of 300 well-separated synthetic samples: 5 features, 3 labelled centers."""
    steps("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3")
    return steps


@pytest.fixture
def write_npy(tmp_path: Path) -> Callable[..., Path]:
    """Save arrays as a user's input file outside the data root."""
    def write(name: str, array: np.ndarray | None = None, **arrays: np.ndarray) -> Path:
        path = tmp_path / "input" / name
        path.parent.mkdir(exist_ok=True)
        if array is not None:
            np.save(path, array)
        else:
            np.savez(path, **arrays)
        return path
    return write


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: file contents, ``None`` for directories."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def assert_records(manifest: dict[str, Any], section: str, files: dict[str, Path]) -> None:
    """``manifest[section]`` names exactly ``files``, with their true sha256 and size."""
    expected = {name: {"sha256": sha256(p), "bytes": p.stat().st_size} for name, p in files.items()}
    assert manifest[section] == expected
