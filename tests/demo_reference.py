"""scikit-learn's example "A demo of K-Means clustering on the handwritten digits data", as code.

The reference every fidelity test compares against: the example's own ``bench_k_means`` and its
three benchmarks, run in-process. Only change: silhouette sampling takes a seed (the example's is
unseeded), so figures are comparable.
"""

from __future__ import annotations

from time import time

import numpy as np
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

VARIANTS = {"k-means++": "k-means++", "random": "random", "pca": "PCA-based"}


def bench_k_means(kmeans, name, data, labels, seed):
    t0 = time()
    estimator = make_pipeline(StandardScaler(), kmeans).fit(data)
    fit_time = time() - t0
    results = [name, fit_time, estimator[-1].inertia_]
    clustering_metrics = [
        metrics.homogeneity_score, metrics.completeness_score, metrics.v_measure_score,
        metrics.adjusted_rand_score, metrics.adjusted_mutual_info_score,
    ]
    results += [m(labels, estimator[-1].labels_) for m in clustering_metrics]
    results += [metrics.silhouette_score(data, estimator[-1].labels_, metric="euclidean",
                                         sample_size=300, random_state=seed)]
    return results


def demo_table(seed: int = 0) -> dict[str, dict[str, float]]:
    """The example's printed table, keyed by clusterflow's variant and metric names."""
    data, labels = load_digits(return_X_y=True)
    n_digits = np.unique(labels).size
    rows = [
        bench_k_means(KMeans(init="k-means++", n_clusters=n_digits, n_init=4, random_state=0),
                      "k-means++", data, labels, seed),
        bench_k_means(KMeans(init="random", n_clusters=n_digits, n_init=4, random_state=0),
                      "random", data, labels, seed),
    ]
    pca = PCA(n_components=n_digits).fit(data)
    rows.append(bench_k_means(KMeans(init=pca.components_, n_clusters=n_digits, n_init=1),
                              "PCA-based", data, labels, seed))
    keys = ("fit_seconds", "inertia", "homogeneity", "completeness", "v_measure", "adjusted_rand",
            "adjusted_mutual_info", "silhouette")
    by_name = {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}
    return {variant: by_name[name] for variant, name in VARIANTS.items()}


def assert_matches_demo(variants: dict[str, dict[str, float]], seed: int = 0) -> None:
    """Inertia to the integer, the label scores and silhouette to 3 decimals, per variant."""
    reference = demo_table(seed)
    assert set(variants) == set(reference)
    for variant, expected in reference.items():
        got = variants[variant]
        assert round(got["inertia"]) == round(expected["inertia"]), variant
        for key in ("homogeneity", "completeness", "v_measure", "adjusted_rand", "adjusted_mutual_info",
                    "silhouette"):
            assert f"{got[key]:.3f}" == f"{expected[key]:.3f}", (variant, key, got[key], expected[key])
