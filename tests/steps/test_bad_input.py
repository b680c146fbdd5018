"""Inputs a user can get wrong: each is refused with exit code 2 and one line on stderr naming the
problem (no traceback), and leaves every artifact written before it byte-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.steps.conftest import Steps, snapshot


@pytest.fixture
def run(steps: Steps, write_npy) -> Steps:
    """Run ``t`` (prepared and clustered) and run ``tiny`` (3 unlabelled samples, only prepared)."""
    steps("prepare", "--dataset", "synthetic", "--n-samples", "60", "--n-features", "4", "--n-centers", "3")
    steps("cluster", "--init", "k-means++")
    steps("prepare", "--dataset", str(write_npy("tiny.npy", np.arange(6.0).reshape(3, 2))), run_id="tiny")
    return steps


@pytest.fixture
def refused(run: Steps):
    """Invoke a step that must fail with exit 2 and change nothing under the data root."""
    before = snapshot(run.root)

    def invoke(step: str, *args: str, expect: tuple[str, ...], **kwargs) -> str:
        result = run(step, *args, expect=2, **kwargs)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        assert "Traceback" not in result.output
        for words in expect:
            assert words in lines[0], (words, lines[0])
        assert snapshot(run.root) == before
        return lines[0]

    return invoke


def user_file(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / "input" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_missing_dataset_file(refused, tmp_path):
    refused("prepare", "--dataset", str(tmp_path / "nope.csv"), expect=("nope.csv", "existing file"))


def test_missing_upstream_input(refused):
    refused("cluster", run_id="fresh", expect=("runs/fresh/prepare/features.npy", "run the prepare step"))


def test_truncated_npy(refused, write_npy):
    path = write_npy("cut.npy", np.ones((50, 4)))
    path.write_bytes(path.read_bytes()[:300])
    refused("prepare", "--dataset", str(path), expect=(str(path), "not a readable .npy file"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_npz(refused, write_npy, damage):
    path = write_npy("bad.npz", X=np.ones((50, 4)), y=np.zeros(50))
    path.write_bytes(b"PK\x03\x04 not a zip" if damage == "garbage" else path.read_bytes()[:400])
    refused("prepare", "--dataset", str(path), expect=(str(path), "not a readable .npz file"))


def test_npz_without_features(refused, write_npy):
    refused("prepare", "--dataset", str(write_npy("noX.npz", data=np.ones((5, 2)))),
            expect=("no array 'X'", "it has: data"))


def test_non_numeric_csv_cell(refused, tmp_path):
    path = user_file(tmp_path, "cells.csv", "a,b,c\n1,2,3\n4,five,6\n")
    refused("prepare", "--dataset", str(path), expect=("line 3, column 'b'", "'five' is not a number"))


def test_ragged_csv_row(refused, tmp_path):
    path = user_file(tmp_path, "ragged.csv", "a,b\n1,2\n3\n")
    refused("prepare", "--dataset", str(path), expect=("line 3 has 1 cells but the header has 2",))


@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf")])
def test_non_finite_csv_values(refused, tmp_path, value, shown):
    path = user_file(tmp_path, "holes.csv", f"a,b\n1,2\n3,{value}\n")
    refused("prepare", "--dataset", str(path), expect=(f"non-finite value {shown} at row 1, column 'b'",))


def test_nan_in_npy(refused, write_npy):
    features = np.ones((4, 3))
    features[2, 1] = np.nan
    refused("prepare", "--dataset", str(write_npy("nan.npy", features)),
            expect=("non-finite value nan at row 2, column 1",))


def test_one_dimensional_data(refused, write_npy):
    refused("prepare", "--dataset", str(write_npy("flat.npy", np.arange(10.0))),
            expect=("2-D array", "shape (10,)"))


def test_text_features(refused, write_npy):
    refused("prepare", "--dataset", str(write_npy("words.npy", np.array([["a", "b"], ["c", "d"]]))),
            expect=("features must be numbers",))


def test_a_single_sample(refused, write_npy):
    refused("prepare", "--dataset", str(write_npy("one.npy", np.ones((1, 3)))), expect=("at least 2 samples",))


def test_labels_not_matching_the_samples(refused, write_npy):
    path = write_npy("short.npz", X=np.ones((5, 2)), y=np.zeros(4))
    refused("prepare", "--dataset", str(path), expect=("labels have shape (4,)", "5 samples"))


def test_label_column_missing(refused, tmp_path):
    path = user_file(tmp_path, "points.csv", "a,b\n1,2\n3,4\n")
    refused("prepare", "--dataset", str(path), "--label-column", "digit",
            expect=("label column 'digit'", "columns: a, b"))


def test_label_column_for_a_non_csv_dataset(refused):
    refused("prepare", "--label-column", "y", expect=("--label-column applies to .csv datasets only",))


def test_fewer_samples_than_clusters(refused):
    refused("cluster", "--n-clusters", "5", run_id="tiny", expect=("n_clusters 5 exceeds the 3 samples",))


def test_pca_init_with_more_clusters_than_features(refused):
    refused("cluster", "--init", "pca", "--n-clusters", "3", run_id="tiny", expect=("only 2 features",))


@pytest.mark.parametrize("args, env, expect", [
    (("--n-clusters", "1"), None, ("'--n-clusters'", "1 is not in the range x>=2")),
    ((), {"CLUSTERFLOW_N_CLUSTERS": "1"}, ("'--n-clusters'", "1 is not in the range x>=2")),
    (("--init", "kmeans"), None, ("'--init'", "'kmeans' is not one of", "k-means++")),
    (("--n-init", "0"), None, ("'--n-init'",)),
])
def test_invalid_cluster_options(refused, args, env, expect):
    refused("cluster", *args, env=env, expect=expect + ("see cluster --help",))


@pytest.mark.parametrize("variant", ["a/b", "..", ".hidden"])
def test_unsafe_variant_name(refused, variant):
    refused("cluster", "--variant", variant, expect=(f"invalid variant {variant!r}",))


@pytest.mark.parametrize("step", ["prepare", "cluster", "evaluate"])
@pytest.mark.parametrize("run_id", ["a/b", "..", "../t", "x/../t"])
def test_unsafe_run_id(refused, step, run_id):
    refused(step, run_id=run_id, expect=(f"invalid run id {run_id!r}",))


def test_evaluate_before_cluster(refused):
    refused("evaluate", run_id="tiny", expect=("no cluster outputs", "run the cluster step first"))


def test_evaluate_before_prepare(refused, run):
    refused("evaluate", run_id="fresh", expect=("runs/fresh/prepare/features.npy", "run the prepare step"))


def test_evaluate_after_prepare_changed_under_the_clusters(run):
    run("prepare", "--dataset", "synthetic", "--n-samples", "80", "--n-features", "4")
    before = snapshot(run.root)
    result = run("evaluate", expect=2)
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert "cluster/k-means++/labels.npy has shape (60,) but prepare/features.npy has 80 samples" in result.stderr
    assert "re-run the cluster (--variant k-means++) step" in result.stderr
    assert snapshot(run.root) == before


def test_label_threshold_without_labels(refused, run):
    refused("evaluate", "--max-inertia", "10", "--min-ari", "0.5", run_id="tiny",
            expect=("--min-ari uses adjusted_rand, which needs true labels",))


def test_rank_by_a_label_metric_without_labels(refused):
    refused("evaluate", "--rank-by", "v_measure", run_id="tiny", expect=("--rank-by uses v_measure",))


def test_data_root_under_a_regular_file(tmp_path, refused):
    blocker = user_file(tmp_path, "blocker", "not a directory")
    refused("prepare", "--data-root", str(blocker / "data"), expect=("cannot write under", str(blocker)))
    assert blocker.read_text() == "not a directory"
