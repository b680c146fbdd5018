"""The data of the report's decision-region figure, computed here so the report image needs no
scikit-learn: the demo's PCA to 2-D, KMeans(init="k-means++", n_init=contract.PROJECTION_N_INIT)
fitted on the reduced data, and the cluster of every point of a GRID_POINTS x GRID_POINTS mesh over them.

Bounded at any size: PCA and KMeans fit a seeded sample of at most MAX_FIT_ROWS rows of the
memory-mapped features (only those rows are read), and at most MAX_PLOT_ROWS of the reduced
points are kept for drawing. The result is a :class:`contract.Projection`, saved as
``contract.PROJECTION``, which the report reads with numpy alone. scikit-learn is imported by
:func:`compute`, not with this module.
"""

from __future__ import annotations

import warnings

import numpy as np

from clusterflow_steps.contract import PROJECTION_N_INIT, Projection

GRID_POINTS = 400  # decision-region mesh: GRID_POINTS x GRID_POINTS, whatever the data's size
MAX_FIT_ROWS = 50_000  # PCA and KMeans of the decision-region figure fit at most this many rows
MAX_PLOT_ROWS = 3_000  # ... and the figure draws at most this many points (page weight: see the README)


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted row indices of a seeded sample of ``size`` of ``n`` rows, or None to use them all."""
    return None if n <= size else np.sort(rng.choice(n, size=size, replace=False))


def compute(features: np.ndarray, n_clusters: int, seed: int) -> Projection:
    """The demo's final figure's data for ``features`` (2-D, at least ``contract.PROJECTION_MIN_FEATURES`` columns)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = features.shape[0]
    rng = np.random.default_rng(seed)
    fit_rows = _sample(n, MAX_FIT_ROWS, rng)
    data = np.asarray(features if fit_rows is None else features[fit_rows], dtype=np.float64)
    reduced = PCA(n_components=2).fit_transform(data)
    kmeans = KMeans(init="k-means++", n_clusters=min(n_clusters, len(reduced)), n_init=PROJECTION_N_INIT,
                    random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate points, fewer distinct points than clusters
        kmeans.fit(reduced)

    # A fixed mesh over the data's bounding box (plus a margin), predicted in one pass.
    low, high = reduced.min(axis=0), reduced.max(axis=0)
    margin = np.maximum((high - low) * 0.05, 1e-9)
    low, high = low - margin, high + margin
    xs, ys = np.linspace(low[0], high[0], GRID_POINTS), np.linspace(low[1], high[1], GRID_POINTS)
    xx, yy = np.meshgrid(xs, ys)
    regions = kmeans.predict(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)

    plot_rows = _sample(len(reduced), MAX_PLOT_ROWS, rng)
    points = reduced if plot_rows is None else reduced[plot_rows]
    return Projection(points=np.ascontiguousarray(points, dtype=np.float64),
                      centroids=np.asarray(kmeans.cluster_centers_, dtype=np.float64),
                      regions=regions.astype(np.min_scalar_type(kmeans.n_clusters - 1)),
                      extent=(float(low[0]), float(high[0]), float(low[1]), float(high[1])),
                      seed=seed, n_samples=n, n_fitted=len(reduced))

