"""The cluster step: its K-Means core in-process, and its CLI writing cluster/<variant>/."""

from __future__ import annotations

import time

import joblib
import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA

from clusterflow_steps.cluster import model
from clusterflow_steps.artifacts import UserError
from tests.steps.conftest import assert_records

OUTPUTS = ["centers.npy", "labels.npy", "manifest.json", "model.joblib", "model.npz"]


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    features, _ = make_blobs(n_samples=200, n_features=4, centers=3, random_state=1)
    return features * [1, 10, 100, 1000]  # unequal scales: the StandardScaler matters


def test_pca_init_starts_from_the_components_of_the_unscaled_data_and_runs_once(points):
    kmeans = model.make_kmeans(points, 3, "pca", n_init=4, seed=0)
    assert isinstance(kmeans, KMeans) and kmeans.n_init == 1
    np.testing.assert_array_equal(kmeans.init, PCA(n_components=3).fit(points).components_)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_seeded_inits_keep_n_init_and_seed(points, init):
    kmeans = model.make_kmeans(points, 3, init, n_init=5, seed=9)
    assert (kmeans.init, kmeans.n_init, kmeans.random_state, kmeans.n_clusters) == (init, 5, 9, 3)


def test_minibatch_uses_minibatch_kmeans(points):
    kmeans = model.make_kmeans(points, 3, "random", n_init=2, seed=0, minibatch=True, batch_size=64)
    assert isinstance(kmeans, MiniBatchKMeans) and kmeans.batch_size == 64
    fitted = model.fit(points, kmeans)
    assert fitted.labels.shape == (200,) and fitted.n_init == 2


def test_fit_keeps_the_pipeline_and_centers_in_the_original_space(points):
    fitted = model.fit(points, model.make_kmeans(points, 3, "k-means++", n_init=4, seed=0))
    scaler, kmeans = fitted.pipeline[0], fitted.pipeline[-1]
    np.testing.assert_array_equal(fitted.labels, kmeans.labels_)
    assert fitted.inertia == kmeans.inertia_ and fitted.n_iter == kmeans.n_iter_ and fitted.fit_seconds > 0
    np.testing.assert_allclose(fitted.centers, scaler.inverse_transform(kmeans.cluster_centers_))
    for k in range(3):  # converged: each center is the mean of its cluster, in raw units
        np.testing.assert_allclose(fitted.centers[k], points[fitted.labels == k].mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("n_clusters, n_samples, n_features, init, message", [
    (1, 10, 4, "random", "2 or more"),
    (11, 10, 4, "random", "exceeds the 10 samples"),
    (5, 10, 4, "pca", "only 4 features"),
])
def test_impossible_cluster_counts_are_user_errors(n_clusters, n_samples, n_features, init, message):
    with pytest.raises(UserError, match=message):
        model.check_n_clusters(n_clusters, n_samples, n_features, init)


def test_possible_cluster_counts_pass():
    model.check_n_clusters(2, 2, 1, "random")
    model.check_n_clusters(4, 10, 4, "pca")


def test_cli_writes_the_variant_and_chains_the_hashes(blobs):
    result = blobs("cluster", "--init", "random")
    assert "init random, 3 clusters" in result.stdout
    out = blobs.path("cluster/random")
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    manifest = blobs.manifest("cluster/random")
    assert (manifest["step"], manifest["variant"], manifest["exit_status"]) == ("cluster", "random", 0)
    assert manifest["params"] == {"n_clusters": None, "init": "random", "n_init": 4, "seed": 0,
                                  "variant": "random", "minibatch": False, "batch_size": 4096}
    prepare = blobs.manifest("prepare")
    assert manifest["inputs"] == {f"prepare/{n}": prepare["outputs"][n] for n in ("features.npy", "labels.npy")}
    assert_records(manifest, "outputs", {n: out / n for n in OUTPUTS if n != "manifest.json"})
    results = manifest["results"]
    assert results["n_clusters"] == 3 and results["init"] == "random" and results["n_init"] == 4
    assert results["estimator"] == "KMeans" and results["n_iter"] >= 1 and results["fit_seconds"] > 0

    features, labels = blobs.array("prepare/features.npy"), blobs.array("cluster/random/labels.npy")
    pipeline = joblib.load(out / "model.joblib")
    np.testing.assert_array_equal(pipeline.predict(features), labels)
    assert results["inertia"] == pipeline[-1].inertia_
    np.testing.assert_allclose(blobs.array("cluster/random/centers.npy"),
                               pipeline[0].inverse_transform(pipeline[-1].cluster_centers_))


def test_model_npz_holds_the_fit_as_plain_arrays_that_predict_its_labels(blobs):
    blobs("cluster", "--init", "random", "--n-init", "2", "--seed", "5")
    out = blobs.path("cluster/random")
    with np.load(out / "model.npz", allow_pickle=False) as archive:  # no pickle: plain arrays only
        arrays = {name: archive[name] for name in archive.files}
    assert sorted(arrays) == sorted(["centers", "scaler_mean", "scaler_scale", "n_clusters", "init", "n_init",
                                     "seed", "estimator"])
    assert (int(arrays["n_clusters"]), str(arrays["init"]), int(arrays["n_init"]), int(arrays["seed"]),
            str(arrays["estimator"])) == (3, "random", 2, 5, "KMeans")
    features = blobs.array("prepare/features.npy").astype(np.float64)
    # nearest center in the scaled space, from the arrays alone: the step's own labels
    scaled = (features - arrays["scaler_mean"]) / arrays["scaler_scale"]
    centers = (arrays["centers"] - arrays["scaler_mean"]) / arrays["scaler_scale"]
    nearest = ((scaled[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(nearest, blobs.array("cluster/random/labels.npy"))
    np.testing.assert_allclose(arrays["scaler_mean"], features.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(arrays["scaler_scale"], features.std(axis=0), rtol=1e-6)

    first = (out / "model.npz").read_bytes()
    time.sleep(2.1)  # a zip member stamped with the time would now differ (2 s resolution)
    blobs("cluster", "--init", "random", "--n-init", "2", "--seed", "5")
    assert (out / "model.npz").read_bytes() == first  # same fit, same bytes: cache keys stay stable


def test_cli_n_clusters_from_the_environment_needs_no_labels(blobs, write_npy):
    blobs("prepare", "--dataset", str(write_npy("plain.npy", np.random.default_rng(0).normal(size=(40, 3)))))
    blobs("cluster", env={"CLUSTERFLOW_N_CLUSTERS": "4", "CLUSTERFLOW_VARIANT": "four"})
    manifest = blobs.manifest("cluster/four")
    assert manifest["params"]["n_clusters"] == 4 and manifest["results"]["n_clusters"] == 4
    assert list(manifest["inputs"]) == ["prepare/features.npy"]
    assert blobs.array("cluster/four/centers.npy").shape == (4, 3)


def test_cli_without_labels_or_n_clusters_asks_for_n_clusters(blobs, write_npy):
    blobs("prepare", "--dataset", str(write_npy("plain.npy", np.ones((5, 2)))))
    result = blobs("cluster", expect=2)
    assert "pass --n-clusters" in result.stderr and not blobs.path("cluster").exists()


def test_cli_pca_init_records_the_single_run(blobs):
    blobs("cluster", "--init", "pca", "--n-init", "7")
    manifest = blobs.manifest("cluster/pca")
    assert manifest["params"]["n_init"] == 7 and manifest["results"]["n_init"] == 1


def test_cli_minibatch_variant(blobs):
    blobs("cluster", "--minibatch", "--batch-size", "32", "--variant", "mb")
    results = blobs.manifest("cluster/mb")["results"]
    assert results["estimator"] == "MiniBatchKMeans" and results["init"] == "k-means++"
    assert blobs.array("cluster/mb/labels.npy").shape == (300,)


def test_variants_sit_side_by_side(blobs):
    blobs("cluster", "--init", "k-means++")
    blobs("cluster", "--init", "random", "--seed", "3", "--variant", "random.s3")
    assert sorted(p.name for p in blobs.path("cluster").iterdir()) == ["k-means++", "random.s3"]
    assert blobs.manifest("cluster/random.s3")["params"]["seed"] == 3
