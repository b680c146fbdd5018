"""Each clusterer through the real images: ``clusterflow run --algorithm`` (the runner, the same
containers and commands as the DAG) and the cluster image run by hand; labels checked against
scikit-learn called directly with the same settings on the features prepare wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, Birch, MiniBatchKMeans
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.containers.conftest import image

pytestmark = pytest.mark.container

CENTERED = ["centers.npy", "labels.npy", "manifest.json", "model.joblib", "model.npz"]
UNCENTERED = ["labels.npy", "manifest.json", "model.joblib", "model.npz"]
# (run args, the variant, its files, scikit-learn's estimator with the same settings; None: from the manifest)
CASES = {
    "dbscan": (["--algorithm", "dbscan", "--min-samples", "10"], "dbscan", [*UNCENTERED, "k_distance.npy"], None),
    "dbscan-eps": (["--algorithm", "dbscan", "--eps", "4", "--metric", "manhattan"], "dbscan", UNCENTERED,
                   DBSCAN(eps=4.0, metric="manhattan")),
    "hdbscan": (["--algorithm", "hdbscan", "--min-cluster-size", "15"], "hdbscan", UNCENTERED,
                HDBSCAN(min_cluster_size=15, copy=False)),
    "agglomerative": (["--algorithm", "agglomerative", "--linkage", "average"], "agglomerative", UNCENTERED,
                      AgglomerativeClustering(n_clusters=10, linkage="average")),
    "gaussian-mixture": (["--algorithm", "gaussian-mixture", "--covariance-type", "diag", "--n-init", "1"],
                         "gaussian-mixture", CENTERED,
                         GaussianMixture(n_components=10, covariance_type="diag", n_init=1, random_state=0)),
    "birch": (["--algorithm", "birch"], "birch", CENTERED, Birch(n_clusters=10)),
    "minibatch-kmeans": (["--algorithm", "minibatch-kmeans", "--init", "random", "--n-init", "1"], "random", CENTERED,
                         MiniBatchKMeans(n_clusters=10, init="random", n_init=1, random_state=0, batch_size=4096)),
}


def clusterflow_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("clusterflow")), "run", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("case", list(CASES))
def test_each_algorithm_runs_through_the_runner_as_scikit_learn_fits_it(docker_cli, data_dir: Path, case: str):
    args, variant, files, estimator = CASES[case]
    result = clusterflow_run(data_dir, "--run-id", case, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"==> cluster[{variant}]: clusterflow/" in result.stdout
    run_dir = data_dir / "runs" / case
    assert sorted(p.name for p in (run_dir / "cluster").iterdir()) == [variant]
    assert sorted(p.name for p in (run_dir / "cluster" / variant).iterdir()) == sorted(files)
    results = json.loads((run_dir / "cluster" / variant / "manifest.json").read_text())["results"]
    if estimator is None:  # dbscan picked eps from the k-distance curve: the same eps gives the same labels
        estimator = DBSCAN(eps=results["eps"], min_samples=10)
    features = np.load(run_dir / "prepare/features.npy")
    expected = make_pipeline(StandardScaler(), estimator).fit_predict(features)
    np.testing.assert_array_equal(np.load(run_dir / "cluster" / variant / "labels.npy"), expected)

    metrics = json.loads((run_dir / "evaluate/metrics.json").read_text())
    assert metrics["best"] == variant and metrics["noise"]["points"][variant] == int((expected == -1).sum())
    html = (run_dir / "report/report.html").read_text()
    assert ('id="k-distance-figure"' in html) == ("k_distance.npy" in files)
    assert ('id="centers-figure"' in html) or "Every sample of the best variant is noise" in html


def test_a_param_the_algorithm_does_not_take_is_refused_before_any_container(docker_cli, data_dir: Path):
    result = clusterflow_run(data_dir, "--run-id", "bad", "--algorithm", "dbscan", "--n-clusters", "3")
    assert result.returncode == 2 and "dbscan does not take --n-clusters" in result.stderr
    assert not (data_dir / "runs" / "bad").exists()


@pytest.mark.parametrize("args, words", [
    (["--algorithm", "dbscan", "--eps", "0"], "use a distance above 0"),
    (["--algorithm", "kmeans", "--eps", "0.5"], "kmeans does not take --eps"),
    (["--algorithm", "spectral"], "'spectral' is not one of"),
])
def test_the_cluster_image_by_hand_refuses_in_one_line(docker_cli, data_dir: Path, args, words):
    subprocess.run([docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", image("prepare"), "--run-id", "hand"],
                   check=True, capture_output=True, timeout=300)
    result = subprocess.run([docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", image("cluster"),
                             "--run-id", "hand", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    assert not (data_dir / "runs" / "hand" / "cluster").exists()


def test_the_cluster_image_by_hand_fits_dbscan_and_the_report_shows_its_curve(docker_cli, data_dir: Path):
    for step, *args in (("prepare",), ("cluster", "--algorithm", "dbscan"), ("evaluate",), ("report",)):
        result = subprocess.run([docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", image(step), "--run-id",
                                 "hand", *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (step, result.stderr)
    run_dir = data_dir / "runs" / "hand"
    assert (run_dir / "cluster/dbscan/k_distance.npy").is_file()
    assert 'id="k-distance-figure"' in (run_dir / "report/report.html").read_text()
