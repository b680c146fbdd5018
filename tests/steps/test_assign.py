"""The assign step in-process: its numpy rules against scikit-learn's predict on the same fitted
models, its summary, and every refusal (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterflow_steps.assign import model
from clusterflow_steps.assign.cli import main as assign
from clusterflow_steps.assign.summary import summarize
from tests.steps.conftest import Steps, snapshot


def run_assign(steps: Steps, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> Result:
    argv = ["--run-id", steps.run_id, "--data-root", str(steps.root), *args]
    result = CliRunner().invoke(assign, argv, env=env, prog_name="assign", catch_exceptions=False)
    assert result.exit_code == expect, (result.stdout, result.stderr)
    return result


def trained(steps: Steps, *cluster: str, evaluate: tuple[str, ...] = ()) -> str:
    """A finished digits run whose one cluster variant is fitted with ``cluster``; its variant."""
    steps("prepare", "--dataset", "digits")
    steps("cluster", *cluster)
    steps("evaluate", *evaluate, expect=None)
    return str(json.loads(steps.path("evaluate/metrics.json").read_text())["best"])


@pytest.fixture
def new_data(write_npy, steps: Steps) -> Path:
    """New rows like the digits: every sample with noise added, and a few far-off rows."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(7)
    features = load_digits().data
    return write_npy("new.npy", np.vstack([features + rng.normal(0, 2, features.shape),
                                           rng.uniform(-20, 40, (50, 64))]))


CASES = [
    ("--init", "k-means++"),
    ("--init", "pca"),
    ("--algorithm", "minibatch-kmeans", "--init", "random"),
    ("--algorithm", "gaussian-mixture", "--covariance-type", "full", "--n-init", "1"),
    ("--algorithm", "gaussian-mixture", "--covariance-type", "tied", "--n-init", "1"),
    ("--algorithm", "gaussian-mixture", "--covariance-type", "diag", "--n-init", "1"),
    ("--algorithm", "gaussian-mixture", "--covariance-type", "spherical", "--n-init", "1"),
    ("--algorithm", "birch"),
]


@pytest.mark.parametrize("cluster", CASES, ids=[" ".join(c) for c in CASES])
def test_assignments_are_scikit_learns_predict(steps, new_data, cluster):
    variant = trained(steps, *cluster)
    out = run_assign(steps, "--dataset", str(new_data)).stdout
    assert out.startswith(f"assign: wrote {steps.path('assign')} ({len(np.load(new_data))} rows")
    pipeline = joblib.load(steps.path(f"cluster/{variant}/model.joblib"))
    features = np.load(new_data)
    assigned = steps.array("assign/assignments.npy")
    assert assigned.dtype == np.int64
    np.testing.assert_array_equal(assigned, pipeline.predict(features))
    summary = json.loads(steps.path("assign/summary.json").read_text())
    n_clusters = len(steps.array(f"cluster/{variant}/centers.npy"))
    assert summary["model"] == {"run_id": "t", "variant": variant, "algorithm": model.load(
        steps.path(f"cluster/{variant}/model.npz"), "cluster").algorithm, "n_clusters": n_clusters, "n_features": 64}
    assert summary["counts"] == {str(k): int((assigned == k).sum()) for k in range(n_clusters)}
    # the distance to the assigned center, in the scaled space, as scikit-learn's scaler makes it
    scaled = pipeline[0].transform(features)
    centers = pipeline[0].transform(steps.array(f"cluster/{variant}/centers.npy"))
    distances = np.linalg.norm(scaled - centers[assigned], axis=1)
    assert summary["distance"]["mean"] == pytest.approx(distances.mean())
    assert summary["distance"]["max"] == pytest.approx(distances.max())
    manifest = steps.manifest("assign")
    assert manifest["step"] == "assign" and manifest["params"]["variant"] == variant
    assert set(manifest["outputs"]) == {"assignments.npy", "summary.json"}
    assert {f"cluster/{variant}/model.npz", "evaluate/metrics.json", str(new_data)} <= set(manifest["inputs"])


def test_the_best_variant_of_several_is_used(steps, new_data):
    steps("prepare", "--dataset", "digits")
    for init in ("k-means++", "random", "pca"):
        steps("cluster", "--init", init)
    steps("evaluate")
    best = json.loads(steps.path("evaluate/metrics.json").read_text())["best"]
    run_assign(steps, "--dataset", str(new_data))
    assert json.loads(steps.path("assign/summary.json").read_text())["model"]["variant"] == best


def test_a_second_assign_of_the_same_data_is_a_cache_hit(steps, new_data):
    trained(steps, "--init", "k-means++")
    image = {"CLUSTERFLOW_IMAGE_DIGEST": "sha256:" + "a" * 64}  # what the runners set: part of the key
    run_assign(steps, "--dataset", str(new_data), env=image)
    run_assign(steps, "--dataset", str(new_data), "--commit-cache", env=image)  # as the runners commit
    assert "assign: cache hit " in run_assign(steps, "--dataset", str(new_data), env=image).stdout


def test_builtin_datasets_are_read_as_prepare_reads_them(steps):
    variant = trained(steps, "--init", "k-means++")
    run_assign(steps, "--dataset", "digits")
    np.testing.assert_array_equal(steps.array("assign/assignments.npy"),
                                  steps.array(f"cluster/{variant}/labels.npy"))


def test_summary_counts_every_cluster_and_leaves_empty_ones_undefined():
    found = summarize(np.array([0, 0, 2]), np.array([1.0, 3.0, 0.5]), 4)
    assert found["counts"] == {"0": 2, "1": 0, "2": 1, "3": 0}
    assert found["distance"]["per_cluster"]["0"] == {"mean": 2.0, "max": 3.0}
    assert found["distance"]["per_cluster"]["1"] == {"mean": None, "max": None}
    assert found["distance"]["mean"] == pytest.approx(1.5) and found["n_samples"] == 3


def refused(steps: Steps, *args: str) -> str:
    before = snapshot(steps.root)
    result = run_assign(steps, *args, expect=2)
    assert snapshot(steps.root) == before  # nothing written
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("algorithm", ["dbscan", "hdbscan", "agglomerative"])
def test_an_algorithm_that_cannot_assign_is_refused(steps, new_data, algorithm):
    trained(steps, "--algorithm", algorithm, *(["--n-clusters", "10"] if algorithm == "agglomerative" else []))
    line = refused(steps, "--dataset", str(new_data))
    assert f"{algorithm} cannot assign new points" in line
    assert "kmeans, minibatch-kmeans, gaussian-mixture, birch" in line


def test_wrong_number_of_features_is_refused(steps, write_npy):
    trained(steps, "--init", "k-means++")
    line = refused(steps, "--dataset", str(write_npy("narrow.npy", np.zeros((5, 3)))))
    assert "has 3 features but the model of run t (k-means++) was fitted on 64" in line


def test_a_run_without_a_model_is_refused(steps, new_data):
    steps("prepare", "--dataset", "digits")
    line = refused(steps, "--dataset", str(new_data))
    assert "missing input" in line and "run the evaluate step" in line


def test_a_failed_quality_gate_is_refused_unless_allowed(steps, new_data):
    trained(steps, "--init", "k-means++", evaluate=("--min-ari", "0.99"))
    line = refused(steps, "--dataset", str(new_data))
    assert "failed its quality gate" in line and "--allow-failed-gate" in line
    run_assign(steps, "--dataset", str(new_data), "--allow-failed-gate")
    assert steps.path("assign/assignments.npy").is_file()


def test_bad_data_is_refused_as_prepare_refuses_it(steps, write_npy):
    trained(steps, "--init", "k-means++")
    bad = np.zeros((4, 64))
    bad[1, 2] = np.nan
    assert "non-finite value" in refused(steps, "--dataset", str(write_npy("nan.npy", bad)))
