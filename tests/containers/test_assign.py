"""Scoring new data through the real assign image: ``clusterflow assign`` (the runner's container and
its cache commit) and the image run by hand; the assignments checked against scikit-learn's predict of
the model the run fitted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits

from clusterflow.runner import caller_steps_user
from tests.containers.conftest import image

pytestmark = pytest.mark.container


def clusterflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("clusterflow")), *args], capture_output=True,
                          text=True, timeout=900)


def trained(data_dir: Path, run_id: str, *args: str, expect: int = 0) -> str:
    """A finished run's best variant."""
    result = clusterflow("run", "--data-dir", str(data_dir), "--run-id", run_id, *args)
    assert result.returncode == expect, result.stderr[-3000:]
    return str(json.loads((data_dir / "runs" / run_id / "evaluate/metrics.json").read_text())["best"])


@pytest.fixture
def new_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    features = load_digits().data
    path = tmp_path / "new.npy"
    np.save(path, features + rng.normal(0, 2, features.shape))
    path.chmod(0o644)
    return path


def assign(data_dir: Path, run_id: str, dataset: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return clusterflow("assign", "--data-dir", str(data_dir), "--model-run", run_id, "--dataset", str(dataset), *args)


@pytest.mark.parametrize("args", [(), ("--algorithm", "gaussian-mixture", "--n-init", "1"), ("--algorithm", "birch")],
                         ids=["kmeans", "gaussian-mixture", "birch"])
def test_clusterflow_assign_scores_new_data_as_the_fitted_model_predicts(docker_cli, data_dir: Path, new_data: Path,
                                                                         args):
    best = trained(data_dir, "m", *args)
    result = assign(data_dir, "m", new_data)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = data_dir / "runs" / "m"
    assert result.stdout.strip().endswith(f"assigned: {run_dir / 'assign' / 'summary.json'}")
    assert "==> assign: clusterflow/assign:" in result.stdout
    assert sorted(p.name for p in (run_dir / "assign").iterdir()) == ["assignments.npy", "manifest.json",
                                                                      "summary.json"]
    pipeline = joblib.load(run_dir / "cluster" / best / "model.joblib")
    assigned = np.load(run_dir / "assign/assignments.npy")
    np.testing.assert_array_equal(assigned, pipeline.predict(np.load(new_data)))
    summary = json.loads((run_dir / "assign/summary.json").read_text())
    assert summary["model"]["variant"] == best and summary["dataset"] == "/input/new.npy"
    assert sum(summary["counts"].values()) == len(assigned)
    again = assign(data_dir, "m", new_data)  # the committed output: a cache hit
    assert again.returncode == 0 and "[assign] assign: cache hit " in again.stdout


def test_an_algorithm_that_cannot_assign_is_refused_in_one_line(docker_cli, data_dir: Path, new_data: Path):
    trained(data_dir, "d", "--algorithm", "dbscan", "--min-samples", "10")
    result = assign(data_dir, "d", new_data)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "dbscan cannot assign new points" in result.stdout + result.stderr
    assert not (data_dir / "runs" / "d" / "assign").exists()


def test_a_failed_gate_is_refused_unless_allowed(docker_cli, data_dir: Path, new_data: Path):
    trained(data_dir, "g", "--min-ari", "0.99", expect=3)
    refused = assign(data_dir, "g", new_data)
    assert refused.returncode == 2 and "failed its quality gate" in refused.stdout
    assert not (data_dir / "runs" / "g" / "assign").exists()
    assert assign(data_dir, "g", new_data, "--allow-failed-gate").returncode == 0


def test_the_assign_image_by_hand(docker_cli, data_dir: Path, new_data: Path, tmp_path: Path):
    trained(data_dir, "h")

    def by_hand(source: Path) -> subprocess.CompletedProcess[str]:
        # as the README's docker run lines: the user who owns the run's files (the runner's steps' user)
        return subprocess.run([docker_cli, "run", "--rm", "--user", "{}:{}".format(*caller_steps_user()),
                               "-v", f"{data_dir}:/data",
                               "--mount", f"type=bind,src={source},dst=/input/{source.name},readonly",
                               image("assign"), "--run-id", "h", "--dataset", f"/input/{source.name}"],
                              capture_output=True, text=True, timeout=300)

    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.zeros((5, 3)))
    narrow.chmod(0o644)
    refused = by_hand(narrow)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "has 3 features but the model of run h" in refused.stderr
    assert not (data_dir / "runs" / "h" / "assign").exists()
    result = by_hand(new_data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"assign: wrote /data/runs/h/assign ({len(np.load(new_data))} rows")
