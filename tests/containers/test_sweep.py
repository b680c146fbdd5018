"""Choosing k through the real images: ``clusterflow run --k`` fans the cluster step out to one
container per variant x k (the runner, the same commands as the DAG's mapped task), evaluate names
the best, the report draws the curves; a re-run with one more k fits once (the cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

pytestmark = pytest.mark.container

KS = range(2, 7)


def clusterflow_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("clusterflow")), "run", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, timeout=1800)


def test_a_sweep_over_k_on_digits_names_the_best_and_draws_the_curves(docker_cli, data_dir: Path):
    result = clusterflow_run(data_dir, "--run-id", "sweep", "--init", "k-means++", "--k", "2..6", "--jobs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    variants = [f"kmeans-k-means++-k{k}" for k in KS]
    run_dir = data_dir / "runs" / "sweep"
    assert sorted(p.name for p in (run_dir / "cluster").iterdir()) == sorted(variants)
    for k, variant in zip(KS, variants, strict=True):
        assert f"==> cluster[{variant}]: clusterflow/" in result.stdout
        assert json.loads((run_dir / "cluster" / variant / "manifest.json").read_text())["results"]["n_clusters"] == k
    features = np.load(run_dir / "prepare/features.npy")
    expected = make_pipeline(StandardScaler(), KMeans(n_clusters=4, n_init=4, random_state=0)).fit_predict(features)
    np.testing.assert_array_equal(np.load(run_dir / "cluster/kmeans-k-means++-k4/labels.npy"), expected)

    metrics = json.loads((run_dir / "evaluate/metrics.json").read_text())
    assert sorted(metrics["variants"]) == sorted(variants) and metrics["ranked_by"] == "adjusted_mutual_info"
    assert metrics["best"] == max(variants, key=lambda v: metrics["variants"][v]["adjusted_mutual_info"])
    html = (run_dir / "report/report.html").read_text()
    assert 'id="k-curves-figure"' in html and "Choosing k" in html
    assert all(f'data-variant="{v}"' in html for v in variants)


def test_a_rerun_with_one_more_k_fits_once(docker_cli, data_dir: Path):
    first = clusterflow_run(data_dir, "--run-id", "k-a", "--init", "random", "--k", "2..4")
    assert first.returncode == 0, first.stderr[-3000:]
    second = clusterflow_run(data_dir, "--run-id", "k-b", "--init", "random", "--k", "2..5")
    assert second.returncode == 0, second.stderr[-3000:]
    hits = {k: json.loads((data_dir / "runs/k-b/cluster" / f"kmeans-random-k{k}" / "manifest.json").read_text())
            ["cache"]["hit"] for k in (2, 3, 4, 5)}
    assert hits == {2: True, 3: True, 4: True, 5: False}
    assert second.stdout.count("cluster: cache hit") == 3


@pytest.mark.parametrize("args, words", [
    (["--k", "6..2"], "is inverted or empty"), (["--k", "2..30"], "more than 64"),
    (["--k", "2..5", "--n-clusters", "3"], "give one of them"),
])
def test_bad_sweeps_are_refused_before_any_container(docker_cli, data_dir: Path, args, words):
    result = clusterflow_run(data_dir, "--run-id", "bad", *args)
    assert result.returncode == 2 and words in result.stderr
    assert not (data_dir / "runs" / "bad").exists()


def test_a_sweep_over_algorithms_and_k_ranks_them_all(docker_cli, data_dir: Path):
    sweep = [{"algorithm": "kmeans", "k": "8..10", "inits": ["k-means++"]},
             {"algorithm": "agglomerative", "k": "9,10", "linkage": "ward"}, {"algorithm": "dbscan", "min_samples": 10}]
    result = clusterflow_run(data_dir, "--run-id", "mixed", "--sweep", json.dumps(sweep), "--jobs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    variants = ["kmeans-k-means++-k8", "kmeans-k-means++-k9", "kmeans-k-means++-k10", "agglomerative-k9",
                "agglomerative-k10", "dbscan"]
    metrics = json.loads((data_dir / "runs/mixed/evaluate/metrics.json").read_text())
    assert sorted(metrics["variants"]) == sorted(variants)
    assert metrics["best"] == max(variants, key=lambda v: metrics["variants"][v]["adjusted_mutual_info"])
    results = json.loads((data_dir / "runs/mixed/cluster/agglomerative-k9/manifest.json").read_text())["results"]
    assert results["algorithm"] == "agglomerative" and results["n_clusters"] == 9
    html = (data_dir / "runs/mixed/report/report.html").read_text()
    assert 'id="k-curves-figure"' in html
