"""The prepare step: its dataset core in-process, and its CLI writing prepare/ under a data root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import clusterflow_steps
from clusterflow_steps.prepare import datasets
from tests.steps.conftest import assert_records


def test_digits_are_load_digits_unchanged():
    data = datasets.digits()
    features, labels = load_digits(return_X_y=True)
    assert data.features.dtype == np.float64 and data.features.shape == (1797, 64)
    np.testing.assert_array_equal(data.features, features)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.n_labels == 10 and data.source is None


def test_synthetic_blobs_are_float32_and_seeded():
    data = datasets.synthetic(n_samples=120, n_features=7, n_centers=4, seed=3)
    assert data.features.dtype == np.float32 and data.features.shape == (120, 7)
    assert data.labels.dtype == np.int64 and data.n_labels == 4
    np.testing.assert_array_equal(data.features, datasets.synthetic(120, 7, 4, seed=3).features)
    assert not np.array_equal(data.features, datasets.synthetic(120, 7, 4, seed=4).features)


def test_validated_makes_features_float_and_labels_int64():
    data = datasets.validated(datasets.Dataset(np.arange(6, dtype=np.int16).reshape(3, 2),
                                               np.array([1.0, 0.0, 1.0])), "mem")
    assert data.features.dtype == np.float64 and data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.labels, [1, 0, 1])
    text = datasets.validated(datasets.Dataset(np.ones((3, 1)), np.array(["b", "a", "b"])), "mem")
    np.testing.assert_array_equal(text.labels, [1, 0, 1])
    single = datasets.Dataset(np.ones((3, 2), dtype=np.float32))
    assert datasets.validated(single, "mem").features.dtype == np.float32


def test_csv_columns_are_features_except_the_label_column(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text('x,kind,y\n1.5,cat,2\n"3",dog,4e1\n\n5,cat,-6\n')
    data = datasets.load(str(path), label_column="kind")
    np.testing.assert_array_equal(data.features, [[1.5, 2], [3, 40], [5, -6]])
    np.testing.assert_array_equal(data.labels, [0, 1, 0])
    assert data.columns == ("x", "y") and data.source == path


def test_csv_without_label_column_has_no_labels(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    data = datasets.load(str(path))
    assert data.labels is None and data.features.shape == (2, 2)


def test_npz_labels_come_from_y(write_npy):
    path = write_npy("d.npz", X=np.eye(3), y=np.array([2, 0, 2]))
    data = datasets.load(str(path))
    np.testing.assert_array_equal(data.features, np.eye(3))
    np.testing.assert_array_equal(data.labels, [2, 0, 2])
    assert datasets.load(str(write_npy("x.npz", X=np.eye(3)))).labels is None


def test_cli_writes_the_digits_with_a_manifest(steps):
    result = steps("prepare")
    assert "1797 x 64 float64 features, 10 distinct labels" in result.stdout
    features, labels = load_digits(return_X_y=True)
    np.testing.assert_array_equal(steps.array("prepare/features.npy"), features)
    assert steps.array("prepare/features.npy").dtype == np.float64
    np.testing.assert_array_equal(steps.array("prepare/labels.npy"), labels)
    manifest = steps.manifest("prepare")
    assert manifest["step"] == "prepare" and manifest["run_id"] == "t" and manifest["exit_status"] == 0
    assert manifest["params"] == {"dataset": "digits", "label_column": None, "seed": 0}
    assert manifest["results"] == {"n_samples": 1797, "n_features": 64, "n_labels": 10, "dtype": "float64"}
    assert_records(manifest, "outputs", {n: steps.path(f"prepare/{n}") for n in ("features.npy", "labels.npy")})
    assert manifest["inputs"] == {}


def test_cli_records_the_users_file_as_input(steps, tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n")
    steps("prepare", "--dataset", str(path), "--label-column", "label")
    manifest = steps.manifest("prepare")
    assert_records(manifest, "inputs", {str(path.resolve()): path})
    assert manifest["results"] == {"n_samples": 3, "n_features": 2, "n_labels": 2, "dtype": "float64"}
    assert manifest["params"]["label_column"] == "label"


def test_cli_settings_come_from_the_environment(steps):
    steps("prepare", env={"CLUSTERFLOW_DATASET": "synthetic", "CLUSTERFLOW_N_SAMPLES": "50",
                          "CLUSTERFLOW_N_FEATURES": "3", "CLUSTERFLOW_N_CENTERS": "2", "CLUSTERFLOW_SEED": "7"})
    manifest = steps.manifest("prepare")
    assert manifest["params"] == {"dataset": "synthetic", "label_column": None, "seed": 7, "n_samples": 50,
                                  "n_features": 3, "n_centers": 2}
    features = steps.array("prepare/features.npy")
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, datasets.synthetic(50, 3, 2, seed=7).features)


def test_a_rerun_replaces_the_whole_output(steps, write_npy):
    steps("prepare")
    steps("prepare", "--dataset", str(write_npy("plain.npy", np.ones((4, 2)))))
    assert sorted(p.name for p in steps.path("prepare").iterdir()) == ["features.npy", "manifest.json"]
    assert steps.manifest("prepare")["results"]["n_labels"] is None
    assert not list(steps.path("").glob(".*")), "temporary directory left behind"


@pytest.mark.parametrize("step", ["prepare", "cluster", "evaluate"])
def test_the_container_entrypoint_is_the_package(step):
    steps_dir = Path(clusterflow_steps.__file__).parents[1]
    result = subprocess.run([sys.executable, "-m", f"clusterflow_steps.{step}", "--help"], capture_output=True,
                            text=True, env={"PYTHONPATH": str(steps_dir)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: {step} [OPTIONS]") and "CLUSTERFLOW_RUN_ID" in result.stdout
