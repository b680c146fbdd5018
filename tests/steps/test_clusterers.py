"""The clusterers besides K-Means: each in-process through the cluster step, its figures checked
against scikit-learn called directly with the same settings; noise through evaluate and the report;
the refusals."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from sklearn import metrics as sk
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, Birch
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clusterflow import spec
from clusterflow_steps.artifacts import UserError
from clusterflow_steps.cluster import algorithms, kdistance
from clusterflow_steps.contract import ESTIMATORS, NOISE, RunId
from clusterflow_steps.evaluate import metrics
from clusterflow_steps.params import PIPELINE, PipelineParams
from tests.steps.conftest import Steps, snapshot

WITH_CENTERS = ["centers.npy", "labels.npy", "manifest.json", "model.joblib", "model.npz"]
WITHOUT_CENTERS = ["labels.npy", "manifest.json", "model.joblib", "model.npz"]


def fit_directly(blobs: Steps, estimator) -> np.ndarray:
    """scikit-learn's own labels for ``StandardScaler -> estimator`` on the prepared features."""
    return make_pipeline(StandardScaler(), estimator).fit_predict(blobs.array("prepare/features.npy"))


def model_npz(blobs: Steps, variant: str) -> dict[str, np.ndarray]:
    with np.load(blobs.path(f"cluster/{variant}/model.npz"), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize("args, estimator", [
    (("--eps", "0.6", "--min-samples", "4"), DBSCAN(eps=0.6, min_samples=4)),
    (("--eps", "1.5", "--metric", "manhattan"), DBSCAN(eps=1.5, metric="manhattan")),
])
def test_dbscan_with_eps_labels_as_scikit_learn_does(blobs, args, estimator):
    result = blobs("cluster", "--algorithm", "dbscan", *args)
    labels = blobs.array("cluster/dbscan/labels.npy")
    np.testing.assert_array_equal(labels, fit_directly(blobs, estimator))
    assert sorted(p.name for p in blobs.path("cluster/dbscan").iterdir()) == WITHOUT_CENTERS
    manifest = blobs.manifest("cluster/dbscan")
    results = manifest["results"]
    assert (results["algorithm"], results["estimator"], results["inertia"]) == ("dbscan", "DBSCAN", None)
    assert results["n_noise"] == int((labels == NOISE).sum())
    assert results["n_clusters"] == len(set(labels) - {NOISE})
    assert (results["eps"], results["min_samples"], results["metric"]) == (
        estimator.eps, estimator.min_samples, estimator.metric)
    assert manifest["params"]["algorithm"] == "dbscan" and "init" not in manifest["params"]
    arrays = model_npz(blobs, "dbscan")
    assert str(arrays["estimator"]) == "DBSCAN" and float(arrays["eps"]) == estimator.eps and "centers" not in arrays
    assert f"{results['n_noise']} noise points" in result.stdout


def test_dbscan_without_eps_picks_the_knee_of_the_k_distance_curve(blobs):
    blobs("cluster", "--algorithm", "dbscan", "--min-samples", "6")
    scaled = StandardScaler().fit_transform(blobs.array("prepare/features.npy"))
    distances, _ = NearestNeighbors(n_neighbors=6).fit(scaled).kneighbors(scaled)
    curve = blobs.array("cluster/dbscan/k_distance.npy")
    np.testing.assert_allclose(curve, np.sort(distances[:, -1]))
    results = blobs.manifest("cluster/dbscan")["results"]
    assert results["eps"] == kdistance.knee(curve) and results["eps_rule"] == kdistance.RULE
    assert blobs.manifest("cluster/dbscan")["params"]["eps"] is None  # asked for: none
    np.testing.assert_array_equal(blobs.array("cluster/dbscan/labels.npy"),
                                  fit_directly(blobs, DBSCAN(eps=results["eps"], min_samples=6)))
    assert results["n_clusters"] == 3  # three separated blobs


def test_the_knee_is_the_point_farthest_below_the_chord():
    curve = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 5.0, 10.0])
    x, y = np.linspace(0, 1, 7), (curve - 1) / 9
    assert kdistance.knee(curve) == curve[np.argmax(x - y)] == 1.4
    assert kdistance.knee(np.zeros(5)) == 1.0 and kdistance.knee(np.array([0.0, 0.0, 2.0])) == 2.0


def test_hdbscan_labels_as_scikit_learn_does(blobs):
    blobs("cluster", "--algorithm", "hdbscan", "--min-cluster-size", "10", "--min-samples", "3")
    np.testing.assert_array_equal(blobs.array("cluster/hdbscan/labels.npy"),
                                  fit_directly(blobs, HDBSCAN(min_cluster_size=10, min_samples=3, copy=False)))
    results = blobs.manifest("cluster/hdbscan")["results"]
    assert (results["estimator"], results["min_cluster_size"], results["min_samples"]) == ("HDBSCAN", 10, 3)
    assert not blobs.path("cluster/hdbscan/centers.npy").exists()


@pytest.mark.parametrize("linkage", ["ward", "complete", "average", "single"])
def test_agglomerative_labels_as_scikit_learn_does(blobs, linkage):
    blobs("cluster", "--algorithm", "agglomerative", "--linkage", linkage, "--variant", linkage)
    np.testing.assert_array_equal(blobs.array(f"cluster/{linkage}/labels.npy"),
                                  fit_directly(blobs, AgglomerativeClustering(n_clusters=3, linkage=linkage)))
    results = blobs.manifest(f"cluster/{linkage}")["results"]
    assert (results["n_clusters"], results["linkage"], results["inertia"]) == (3, linkage, None)


def test_agglomerative_default_linkage_is_ward(blobs):
    blobs("cluster", "--algorithm", "agglomerative")
    assert blobs.manifest("cluster/agglomerative")["results"]["linkage"] == "ward"


def test_gaussian_mixture_means_are_its_centers(blobs):
    blobs("cluster", "--algorithm", "gaussian-mixture", "--covariance-type", "diag", "--n-init", "2", "--seed", "3")
    direct = make_pipeline(StandardScaler(), GaussianMixture(n_components=3, covariance_type="diag", n_init=2,
                                                             random_state=3))
    labels = direct.fit_predict(blobs.array("prepare/features.npy"))
    np.testing.assert_array_equal(blobs.array("cluster/gaussian-mixture/labels.npy"), labels)
    centers = blobs.array("cluster/gaussian-mixture/centers.npy")
    np.testing.assert_allclose(centers, direct[0].inverse_transform(direct[-1].means_))
    arrays = model_npz(blobs, "gaussian-mixture")
    np.testing.assert_allclose(arrays["weights"], direct[-1].weights_)
    np.testing.assert_allclose(arrays["precisions_cholesky"], direct[-1].precisions_cholesky_)
    assert str(arrays["covariance_type"]) == "diag" and int(arrays["n_init"]) == 2
    # plain arrays predict the labels: the mixture's most likely component of the scaled samples
    pipeline = joblib.load(blobs.path("cluster/gaussian-mixture/model.joblib"))
    np.testing.assert_array_equal(pipeline.predict(blobs.array("prepare/features.npy")), labels)
    results = blobs.manifest("cluster/gaussian-mixture")["results"]
    scaled, scaled_centers = direct[0].transform(blobs.array("prepare/features.npy")), direct[-1].means_
    assert results["inertia"] == pytest.approx(((scaled - scaled_centers[labels]) ** 2).sum())


def test_birch_centers_are_the_means_of_its_clusters(blobs):
    blobs("cluster", "--algorithm", "birch")
    features = blobs.array("prepare/features.npy")
    labels = fit_directly(blobs, Birch(n_clusters=3))
    np.testing.assert_array_equal(blobs.array("cluster/birch/labels.npy"), labels)
    centers = blobs.array("cluster/birch/centers.npy")
    for k in range(3):
        np.testing.assert_allclose(centers[k], features[labels == k].mean(axis=0), rtol=1e-5)
    arrays = model_npz(blobs, "birch")
    assert str(arrays["estimator"]) == "Birch" and arrays["subcluster_labels"].ndim == 1


def test_minibatch_kmeans_is_the_minibatch_flag(blobs):
    blobs("cluster", "--algorithm", "minibatch-kmeans", "--batch-size", "32", "--variant", "a")
    blobs("cluster", "--minibatch", "--batch-size", "32", "--variant", "b")
    a, b = blobs.manifest("cluster/a"), blobs.manifest("cluster/b")
    assert {**a["params"], "variant": "b"} == b["params"] and a["params"]["minibatch"] is True
    assert a["results"]["estimator"] == "MiniBatchKMeans"
    np.testing.assert_array_equal(blobs.array("cluster/a/labels.npy"), blobs.array("cluster/b/labels.npy"))


@pytest.mark.parametrize("args, words", [
    (("--algorithm", "kmeans", "--eps", "0.5"), ("kmeans does not take --eps", "--n-clusters")),
    (("--eps", "0.5"), ("kmeans does not take --eps",)),
    (("--algorithm", "dbscan", "--n-clusters", "3"), ("dbscan does not take --n-clusters", "--eps")),
    (("--algorithm", "dbscan", "--init", "pca"), ("dbscan does not take --init",)),
    (("--algorithm", "hdbscan", "--minibatch"), ("hdbscan does not take --minibatch",)),
    (("--algorithm", "birch", "--linkage", "ward"), ("birch does not take --linkage",)),
    (("--algorithm", "agglomerative", "--covariance-type", "full"), ("does not take --covariance-type",)),
    (("--algorithm", "dbscan", "--eps", "0"), ("eps 0.0", "above 0", "k-distance")),
    (("--algorithm", "dbscan", "--eps", "-1"), ("eps -1.0", "above 0")),
    (("--algorithm", "dbscan", "--eps", "nan"), ("eps nan", "above 0")),
    (("--algorithm", "k-medoids",), ("'k-medoids' is not one of", "dbscan")),
    (("--algorithm", "dbscan", "--min-samples", "301"), ("--min-samples 301 exceeds the 300 samples",)),
    (("--algorithm", "hdbscan", "--min-cluster-size", "400"), ("--min-cluster-size 400 exceeds",)),
    (("--algorithm", "gaussian-mixture", "--n-clusters", "301"), ("exceeds the 300 samples",)),
    (("--algorithm", "dbscan", "--metric", "hamming"), ("'hamming' is not one of",)),
])
def test_bad_algorithm_options_are_refused_in_one_line_and_write_nothing(blobs, args, words):
    before = snapshot(blobs.root)
    result = blobs("cluster", *args, expect=2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(blobs.root) == before


def test_an_option_in_the_environment_counts_as_given(blobs):
    result = blobs("cluster", "--algorithm", "dbscan", env={"CLUSTERFLOW_N_INIT": "3"}, expect=2)
    assert "dbscan does not take --n-init" in result.stderr


def test_quadratic_memory_is_refused_before_allocating(blobs, monkeypatch):
    monkeypatch.setattr("clusterflow_steps.cluster.cli.memory_limit", lambda: 1 << 20)  # 1 MiB
    before = snapshot(blobs.root)
    result = blobs("cluster", "--algorithm", "agglomerative", "--linkage", "average", expect=2)
    line = result.stderr.strip()
    assert "agglomerative --linkage average needs about" in line and "300 samples" in line
    assert "a sample of at most 256 rows" in line and "--linkage single" in line and "minibatch-kmeans" in line
    assert snapshot(blobs.root) == before
    blobs("cluster", "--algorithm", "agglomerative", "--linkage", "single")  # a spanning tree: linear memory


def test_the_memory_budget_is_half_the_limit():
    settings = algorithms.settings("agglomerative", {"linkage": "ward"})
    algorithms.check("agglomerative", settings, 1000, memory=2 * 16 * 1000 * 999 // 2)
    with pytest.raises(UserError, match="1,001 samples"):
        algorithms.check("agglomerative", settings, 1001, memory=2 * 16 * 1000 * 999 // 2)
    algorithms.check("birch", algorithms.settings("birch", {}), 10**7, memory=1)


def test_evaluate_records_noise_and_why_scores_are_undefined(blobs):
    blobs("cluster", "--algorithm", "dbscan", "--eps", "0.6", "--min-samples", "4")
    blobs("cluster", "--algorithm", "dbscan", "--eps", "0.001", "--variant", "all-noise")
    blobs("evaluate")
    payload = json.loads(blobs.path("evaluate/metrics.json").read_text())
    features, truth = blobs.array("prepare/features.npy"), blobs.array("prepare/labels.npy")
    labels = blobs.array("cluster/dbscan/labels.npy")
    assert payload["noise"]["points"] == {"dbscan": int((labels == NOISE).sum()), "all-noise": 300}
    assert set(payload["noise"]["treatment"]) == {"inertia", "silhouette", *metrics.LABEL_METRICS}
    row = payload["variants"]["dbscan"]
    assert row["adjusted_rand"] == pytest.approx(sk.adjusted_rand_score(truth, labels))  # noise: one more cluster
    drawn = np.random.RandomState(0).permutation(300)[:300]
    drawn = drawn[labels[drawn] != NOISE]
    assert row["silhouette"] == pytest.approx(sk.silhouette_score(features[drawn], labels[drawn]))
    assert payload["undefined"]["dbscan"] == {"inertia": "the algorithm has no centers (no centers.npy)"}
    assert payload["variants"]["all-noise"]["silhouette"] is None
    assert payload["undefined"]["all-noise"]["silhouette"] == "every drawn sample is noise"
    assert payload["best"] == "dbscan"


def test_silhouette_of_a_single_cluster_says_why():
    labels = np.array([0] * 8 + [NOISE] * 2)
    assert metrics.silhouette(np.arange(20.0).reshape(10, 2), labels, 0) is None
    assert metrics.silhouette_undefined(labels, 0) == "the drawn samples that are not noise hold a single cluster"


def test_the_report_adapts_to_dbscan(steps):
    steps("prepare", "--dataset", "digits")
    steps("cluster", "--algorithm", "dbscan", "--min-samples", "10")
    steps("evaluate")
    steps("report")
    results = steps.manifest("report")["results"]
    assert results["figures"] == ["decision_regions", "cluster_centers", "contingency", "k_distance"]
    html = steps.path("report/report.html").read_text()
    assert "DBSCAN clustering report" in html and 'id="k-distance-figure"' in html and 'id="noise"' in html
    assert "DBSCAN has no centers: these are the means of the points" in html
    assert "The best variant is DBSCAN, not K-Means" in html and '<th scope="col">variant</th>' in html


def test_the_report_of_an_all_noise_run_says_so(blobs):
    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "64", "--n-centers", "3")
    blobs("cluster", "--algorithm", "dbscan", "--eps", "0.001")
    blobs("evaluate")
    blobs("report")
    html = blobs.path("report/report.html").read_text()
    assert "Every sample of the best variant is noise" in html and "every drawn sample is noise" in html


@pytest.mark.parametrize("conf, words", [
    ({"algorithm": "dbscan", "n_clusters": 5}, "dbscan does not take --n-clusters"),
    ({"algorithm": "dbscan", "inits": ("pca",)}, "dbscan does not take --inits"),
    ({"eps": 0.5}, "kmeans does not take --eps"),
    ({"algorithm": "dbscan", "eps": -0.5}, "eps -0.5: use a distance above 0"),
    ({"algorithm": "optics"}, "unknown algorithm 'optics'"),
    ({"algorithm": "agglomerative", "linkage": "median"}, "unknown linkage 'median'"),
    ({"algorithm": "birch", "minibatch": True}, "birch does not take --minibatch"),
])
def test_pipeline_params_refuse_what_the_algorithm_does_not_take(conf, words):
    with pytest.raises(ValueError) as raised:
        PipelineParams(**conf)
    assert words in str(raised.value)


def test_one_variant_named_after_the_algorithm_and_only_its_options_on_its_command():
    params = spec.PipelineParams(algorithm="dbscan", eps=0.5, min_samples=4)
    assert params.variants == ("dbscan",)
    assert spec.command("cluster", RunId("r1"), params, "dbscan") == (
        "--run-id", "r1", "--algorithm", "dbscan", "--eps", "0.5", "--min-samples", "4", "--seed", "0", "--cache",
        "--variant", "dbscan")
    stages = spec.stages(RunId("r1"), params, {step: f"clusterflow/{step}:t" for step in spec.STEPS})
    assert [t.name for t in stages[1]] == ["cluster[dbscan]"]
    mixture = spec.PipelineParams(algorithm="gaussian-mixture", n_clusters=4, covariance_type="tied", n_init=2)
    assert spec.command("cluster", RunId("r1"), mixture, "gaussian-mixture")[2:-3] == (
        "--algorithm", "gaussian-mixture", "--n-clusters", "4", "--covariance-type", "tied", "--n-init", "2",
        "--seed", "0")
    minibatch = spec.PipelineParams(algorithm="minibatch-kmeans", inits=("random",))
    assert minibatch.variants == ("random",)
    assert spec.command("cluster", RunId("r1"), minibatch, "random")[-4:] == (
        "--init", "random", "--variant", "random")


def test_every_algorithm_has_an_estimator():
    assert set(ESTIMATORS) == set(PIPELINE["algorithm"].choices or ())


@pytest.mark.parametrize("args, words", [
    (["--algorithm", "dbscan", "--n-clusters", "3"], "dbscan does not take --n-clusters"),
    (["--algorithm", "dbscan", "--eps", "0"], "use a distance above 0"),
    (["--algorithm", "louvain"], "unknown algorithm 'louvain'"),
])
def test_the_local_cli_refuses_before_contacting_the_engine(tmp_path, args, words):
    from click.testing import CliRunner

    from clusterflow import cli

    result = CliRunner().invoke(cli.main, ["run", "--data-dir", str(tmp_path / "d"), "--run-id", "r", *args])
    assert result.exit_code == 2 and words in result.output and not (tmp_path / "d").exists()
