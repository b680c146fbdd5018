"""The bare work in one Python process: what the containers are compared with.

    python -m benchmarks.bare digits       # scikit-learn's digits demo: 3 benchmarks + its figure
    python -m benchmarks.bare scale N      # N x 64 synthetic blobs, as the steps make them; the
                                           # same pipeline fit (MiniBatchKMeans from 100,000) and scores
    python -m benchmarks.bare sweep LOW HIGH   # the digits, K-Means (k-means++) for k = LOW..HIGH, scored

Run through ``benchmarks.measure.PEAK_RSS_WRAPPER`` so that it reports its peak RSS.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.scale_params import BATCH_SIZE, MINIBATCH_FROM, N_CENTERS, N_FEATURES, N_INIT, SEED
from tests.demo_reference import bench_k_means, demo_table


def demo_figure(data: np.ndarray, n_clusters: int, path: Path) -> None:
    """The demo's figure: K-Means decision regions on the PCA-reduced data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    reduced = PCA(n_components=2).fit_transform(data)
    kmeans = KMeans(init="k-means++", n_clusters=n_clusters, n_init=4).fit(reduced)
    h = 0.02
    x_min, x_max = reduced[:, 0].min() - 1, reduced[:, 0].max() + 1
    y_min, y_max = reduced[:, 1].min() - 1, reduced[:, 1].max() + 1
    xx, yy = np.meshgrid(np.arange(x_min, x_max, h), np.arange(y_min, y_max, h))
    z = kmeans.predict(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
    plt.figure(1)
    plt.imshow(z, interpolation="nearest", extent=(xx.min(), xx.max(), yy.min(), yy.max()),
               cmap=plt.cm.Paired, aspect="auto", origin="lower")
    plt.plot(reduced[:, 0], reduced[:, 1], "k.", markersize=2)
    plt.savefig(path)


def digits() -> None:
    from sklearn.datasets import load_digits

    demo_table()
    data, labels = load_digits(return_X_y=True)
    with tempfile.TemporaryDirectory() as tmp:
        demo_figure(data, int(np.unique(labels).size), Path(tmp) / "figure.png")


def scale(n_samples: int) -> None:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.datasets import make_blobs

    features, labels = make_blobs(n_samples=n_samples, n_features=N_FEATURES, centers=N_CENTERS,
                                  random_state=SEED)
    features = features.astype(np.float32)
    settings = {"n_clusters": N_CENTERS, "init": "k-means++", "n_init": N_INIT, "random_state": SEED}
    kmeans = (MiniBatchKMeans(batch_size=BATCH_SIZE, **settings) if n_samples >= MINIBATCH_FROM
              else KMeans(**settings))
    bench_k_means(kmeans, "k-means++", features, labels, SEED)


def sweep(low: int, high: int) -> None:
    """The fits of ``clusterflow run --init k-means++ --k LOW..HIGH``, one after the other, each
    scored as the demo scores it (its table row: the label scores and the silhouette)."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    for k in range(low, high + 1):
        bench_k_means(KMeans(init="k-means++", n_clusters=k, n_init=N_INIT, random_state=SEED), f"k={k}", data,
                      labels, SEED)


if __name__ == "__main__":
    if sys.argv[1] == "sweep":
        sweep(int(sys.argv[2]), int(sys.argv[3]))
    else:
        digits() if sys.argv[1] == "digits" else scale(int(sys.argv[2]))
