"""The evaluate step: scores, ranking and gate in-process, and its CLI writing evaluate/."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn import metrics as sk

from clusterflow_steps import contract
from clusterflow_steps.artifacts import UserError
from clusterflow_steps.evaluate import gate, metrics, projection
from tests.steps.conftest import assert_records

KEYS = {"inertia", "homogeneity", "completeness", "v_measure", "adjusted_rand", "adjusted_mutual_info",
        "silhouette", "fit_seconds"}


@pytest.fixture
def two_variants(blobs):
    blobs("cluster", "--init", "k-means++")
    blobs("cluster", "--init", "random", "--n-clusters", "2")
    return blobs


def test_scores_are_the_demos_metrics():
    rng = np.random.default_rng(0)
    features, truth, labels = rng.normal(size=(400, 3)), rng.integers(0, 3, 400), rng.integers(0, 4, 400)
    row = metrics.scores(features, truth, labels, inertia=12.5, fit_seconds=0.25, seed=5)
    assert set(row) == KEYS and row["inertia"] == 12.5 and row["fit_seconds"] == 0.25
    assert row["adjusted_rand"] == sk.adjusted_rand_score(truth, labels)
    assert row["adjusted_mutual_info"] == sk.adjusted_mutual_info_score(truth, labels)
    assert row["v_measure"] == sk.v_measure_score(truth, labels)
    assert row["silhouette"] == sk.silhouette_score(features, labels, sample_size=300, random_state=5)
    assert row["silhouette"] != metrics.silhouette(features, labels, seed=6)


def test_scores_without_labels_leave_label_metrics_null():
    features, labels = np.arange(20.0).reshape(10, 2), np.repeat([0, 1], 5)
    row = metrics.scores(features, None, labels, inertia=1.0, fit_seconds=0.1, seed=0)
    assert all(row[k] is None for k in metrics.LABEL_METRICS)
    assert row["silhouette"] == sk.silhouette_score(features, labels)  # 10 samples: all of them


def test_silhouette_is_null_when_undefined():
    assert metrics.silhouette(np.ones((5, 2)), np.zeros(5, dtype=int), 0) is None


def test_ranking_directions_nulls_and_ties():
    rows = {"a": {"inertia": 5.0, "silhouette": None}, "b": {"inertia": 3.0, "silhouette": 0.1},
            "c": {"inertia": 3.0, "silhouette": 0.4}}
    assert metrics.best_variant(rows, "inertia") == "b"  # lowest; tie broken by name
    assert metrics.best_variant(rows, "silhouette") == "c"  # highest; null never best
    assert metrics.best_variant({"x": {"silhouette": None}, "w": {"silhouette": None}}, "silhouette") == "w"


def test_gate_bounds_and_messages():
    limits = {"min_ari": 0.5, "max_inertia": 100.0, "min_silhouette": 0.1, "min_ami": None}
    found = gate.thresholds(limits, has_labels=True)
    assert [t.option for t in found] == ["--min-ari", "--min-silhouette", "--max-inertia"]
    verdict = gate.check({"adjusted_rand": 0.4692, "inertia": 100.0, "silhouette": None}, found)
    failures = ["adjusted_rand 0.469 < --min-ari 0.5", "silhouette is undefined, so --min-silhouette 0.1 is not met"]
    assert verdict == {"passed": False, "failures": failures,
                       "thresholds": {"min_ari": 0.5, "min_silhouette": 0.1, "max_inertia": 100.0}}
    assert gate.verdict("k", verdict) == f"quality gate failed for best variant k: {'; '.join(failures)}"
    assert gate.check({"adjusted_rand": 0.5, "inertia": 99.0, "silhouette": 0.2}, found)["passed"]


def test_gate_refuses_label_thresholds_without_labels_and_non_finite_limits():
    assert gate.thresholds({"max_inertia": 5.0, "min_silhouette": 0.0}, has_labels=False)
    with pytest.raises(UserError, match="--min-v-measure uses v_measure, which needs true labels"):
        gate.thresholds({"min_v_measure": 0.5}, has_labels=False)
    with pytest.raises(UserError, match="--max-inertia nan: give a finite number"):
        gate.thresholds({"max_inertia": float("nan")}, has_labels=True)


def test_cli_scores_every_variant_and_records_what_it_read(two_variants):
    result = two_variants("evaluate")
    assert "quality gate passed for best variant k-means++" in result.stdout
    payload = json.loads(two_variants.path("evaluate/metrics.json").read_text())
    assert set(payload) == {"variants", "best", "ranked_by", "quality_gate", "undefined", "noise"}
    assert set(payload["variants"]) == {"k-means++", "random"}
    assert all(set(row) == KEYS for row in payload["variants"].values())
    assert payload["ranked_by"] == "adjusted_mutual_info" and payload["best"] == "k-means++"
    assert payload["quality_gate"] == {"passed": True, "failures": [], "thresholds": {}}

    truth = two_variants.array("prepare/labels.npy")
    for variant, row in payload["variants"].items():
        cluster = two_variants.manifest(f"cluster/{variant}")["results"]
        assert (row["inertia"], row["fit_seconds"]) == (cluster["inertia"], cluster["fit_seconds"])
        labels = two_variants.array(f"cluster/{variant}/labels.npy")
        assert row["adjusted_rand"] == pytest.approx(sk.adjusted_rand_score(truth, labels))
        assert row["silhouette"] == pytest.approx(sk.silhouette_score(
            two_variants.array("prepare/features.npy"), labels, sample_size=300, random_state=0))
    assert payload["variants"]["k-means++"]["adjusted_rand"] == pytest.approx(1.0)  # 3 separated blobs

    manifest = two_variants.manifest("evaluate")
    assert manifest["exit_status"] == 0 and manifest["results"]["best"] == "k-means++"
    read = ["prepare/features.npy", "prepare/labels.npy"] + [
        f"cluster/{v}/{n}" for v in ("k-means++", "random") for n in ("labels.npy", "manifest.json")]
    assert_records(manifest, "inputs", {name: two_variants.path(name) for name in sorted(read)})
    assert_records(manifest, "outputs", {name: two_variants.path(f"evaluate/{name}")
                                         for name in ("metrics.json", "projection.npz")})
    assert manifest["params"] == {"seed": 0, "rank_by": None, "min_ari": None, "min_ami": None,
                                  "min_v_measure": None, "min_silhouette": None, "max_inertia": None}


def test_cli_ranks_by_the_chosen_metric(two_variants):
    two_variants("evaluate", "--rank-by", "inertia")
    payload = json.loads(two_variants.path("evaluate/metrics.json").read_text())
    assert payload["ranked_by"] == "inertia"
    assert payload["best"] == min(payload["variants"], key=lambda v: payload["variants"][v]["inertia"])


def test_cli_without_labels_ranks_by_silhouette(steps, write_npy):
    """Without labels the default is the silhouette (issue 15: inertia always prefers more clusters)."""
    features = np.random.default_rng(1).normal(size=(60, 2))
    steps("prepare", "--dataset", str(write_npy("plain.npy", features)))
    steps("cluster", "--n-clusters", "2", "--variant", "two")
    steps("cluster", "--n-clusters", "5", "--variant", "five")
    steps("evaluate", "--max-inertia", "1e9")
    payload = json.loads(steps.path("evaluate/metrics.json").read_text())
    assert payload["ranked_by"] == "silhouette"
    assert payload["best"] == max(("two", "five"), key=lambda v: payload["variants"][v]["silhouette"])
    assert payload["variants"]["five"]["inertia"] < payload["variants"]["two"]["inertia"]  # what inertia would pick
    assert all(payload["variants"][v][k] is None for v in ("two", "five") for k in metrics.LABEL_METRICS)
    assert payload["quality_gate"]["thresholds"] == {"max_inertia": 1e9}
    assert "prepare/labels.npy" not in steps.manifest("evaluate")["inputs"]


def test_cli_gate_breach_writes_everything_then_exits_3(blobs):
    blobs("cluster", "--n-clusters", "2", "--variant", "merged")  # 3 blobs in 2 clusters: ARI well below 0.9
    result = blobs("evaluate", "--min-ari", "0.9", "--min-silhouette", "-1", expect=3)
    payload = json.loads(blobs.path("evaluate/metrics.json").read_text())
    ari = payload["variants"]["merged"]["adjusted_rand"]
    expected = f"quality gate failed for best variant merged: adjusted_rand {ari:.3f} < --min-ari 0.9"
    assert result.stderr == f"Error: {expected}\n" and "wrote" in result.stdout
    assert payload["quality_gate"] == {"passed": False, "failures": [expected.split(": ", 1)[1]],
                                       "thresholds": {"min_ari": 0.9, "min_silhouette": -1.0}}
    manifest = blobs.manifest("evaluate")
    assert manifest["exit_status"] == 3 and manifest["results"]["quality_gate"] == payload["quality_gate"]


def test_cli_gate_breach_still_ends_stdout_with_the_summary(two_variants):
    """The DAG pushes it on a breach too (the email and the metrics Asset need the best variant)."""
    result = two_variants("evaluate", "--min-ari", "1.5", expect=3)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["quality_gate"]["passed"] is False and summary["best"] == "k-means++"


def test_cli_gate_threshold_from_the_environment(two_variants):
    result = two_variants("evaluate", env={"CLUSTERFLOW_MIN_AMI": "1.5"}, expect=3)
    assert "adjusted_mutual_info" in result.stderr and "< --min-ami 1.5" in result.stderr
    assert two_variants.manifest("evaluate")["params"]["min_ami"] == 1.5


def test_cli_writes_the_report_figures_projection_for_the_best_variant(two_variants):
    """evaluate/projection.npz: the demo's PCA + KMeans(k-means++) data of the report's figure, with
    the best variant's number of clusters and evaluate's seed; the stdout summary is unchanged."""
    result = two_variants("evaluate", "--seed", "4")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert set(summary) == {"best", "ranked_by", "metrics", "quality_gate"} and summary["best"] == "k-means++"
    with np.load(two_variants.path("evaluate/projection.npz"), allow_pickle=False) as archive:
        written = {name: archive[name] for name in archive.files}
    assert sorted(written) == sorted(field.name for field in dataclasses.fields(contract.Projection))
    expected = projection.compute(two_variants.array("prepare/features.npy"), 3, seed=4)
    assert (int(written["seed"]), int(written["n_samples"]), int(written["n_fitted"])) == (4, 300, 300)
    for name in ("points", "centroids", "extent"):  # equal but for BLAS/OpenMP rounding (thread counts)
        np.testing.assert_allclose(written[name], getattr(expected, name), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(written["regions"], expected.regions)
    assert written["centroids"].shape == (3, 2) and written["points"].shape == (300, 2)
    assert written["regions"].shape == (projection.GRID_POINTS, projection.GRID_POINTS)
    assert written["regions"].dtype == np.uint8 and set(np.unique(written["regions"])) <= {0, 1, 2}


def test_the_projection_file_is_the_same_bytes_for_the_same_run(two_variants, tmp_path):
    two_variants("evaluate", "--no-cache")
    first = two_variants.path("evaluate/projection.npz").read_bytes()
    two_variants("evaluate", "--no-cache")
    assert two_variants.path("evaluate/projection.npz").read_bytes() == first


def test_the_projection_is_the_demos_pca_and_kmeans_on_a_bounded_sample():
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    features = np.random.default_rng(5).normal(size=(1_000, 6))
    got = projection.compute(features, 4, seed=2)
    reduced = PCA(n_components=2).fit_transform(features)
    kmeans = KMeans(init="k-means++", n_clusters=4, n_init=4, random_state=2).fit(reduced)
    np.testing.assert_allclose(got.points, reduced)
    np.testing.assert_allclose(got.centroids, kmeans.cluster_centers_)
    low, high = reduced.min(axis=0), reduced.max(axis=0)
    pad = (high - low) * 0.05
    np.testing.assert_allclose(got.extent, [low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1]])

    class Rows(np.ndarray):
        """Records the largest row selection made of it (the memory-mapped features in the step)."""
        largest = 0

        def __getitem__(self, item):
            rows = np.ndarray.__getitem__(self, item)
            Rows.largest = max(Rows.largest, len(rows))
            return rows

    big = np.zeros((projection.MAX_FIT_ROWS + 5_000, 3))
    big[:, :2] = np.random.default_rng(6).normal(size=(len(big), 2))
    got = projection.compute(big.view(Rows), 3, seed=0)
    assert Rows.largest == projection.MAX_FIT_ROWS and got.n_fitted == projection.MAX_FIT_ROWS
    assert got.n_samples == len(big) and len(got.points) == projection.MAX_PLOT_ROWS


def test_one_feature_data_get_no_projection(steps, write_npy):
    steps("prepare", "--dataset", str(write_npy("line.npy", np.arange(40.0).reshape(-1, 1))))
    steps("cluster", "--n-clusters", "2")
    steps("evaluate")
    assert sorted(p.name for p in steps.path("evaluate").iterdir()) == ["manifest.json", "metrics.json"]
    steps("report")
    assert "needs at least 2 features" in steps.path("report/report.html").read_text()


def test_a_best_variant_manifest_without_n_clusters_is_one_line_naming_the_cluster_step(blobs):
    blobs("cluster")
    path = blobs.path("cluster/k-means++/manifest.json")
    manifest = json.loads(path.read_text())
    del manifest["results"]["n_clusters"]
    path.write_text(json.dumps(manifest))
    result = blobs("evaluate", expect=2)
    (line,) = result.stderr.strip().splitlines()
    assert "lacks the n_clusters result" in line and "cluster (--variant k-means++)" in line
    assert not blobs.path("evaluate").exists()
