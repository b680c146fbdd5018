"""The data of the report's decision-region figure, computed here so the report image needs no
scikit-learn: the demo's PCA to 2-D, KMeans(init="k-means++", n_init=4) fitted on the reduced
data, and the cluster of every point of a GRID_POINTS x GRID_POINTS mesh over them.

Bounded at any size: PCA and KMeans fit a seeded sample of at most MAX_FIT_ROWS rows of the
memory-mapped features (only those rows are read), and at most MAX_PLOT_ROWS of the reduced
points are kept for drawing. Written as ``evaluate/projection.npz`` (``contract.PROJECTION_FIELDS``), which the
report reads with numpy alone. scikit-learn is imported by :func:`compute`, not with this module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterflow_steps.artifacts import PROJECTION_FIELDS, save_npz

GRID_POINTS = 400  # decision-region mesh: GRID_POINTS x GRID_POINTS, whatever the data's size
MAX_FIT_ROWS = 50_000  # PCA and KMeans of the decision-region figure fit at most this many rows
MAX_PLOT_ROWS = 3_000  # ... and the figure draws at most this many points (page weight: see the README)
N_INIT = 4


@dataclass(frozen=True)
class Projection:
    """What the figure draws. ``extent`` is (x low, x high, y low, y high) of the mesh; ``regions[i, j]``
    is the cluster of the mesh point at row i (y, lowest first) and column j (x)."""

    points: np.ndarray  # (n_plot, 2) float64: the reduced points drawn as dots
    centroids: np.ndarray  # (n_clusters, 2) float64
    regions: np.ndarray  # (GRID_POINTS, GRID_POINTS) cluster index, the smallest unsigned dtype that fits
    extent: np.ndarray  # (4,) float64
    seed: int
    n_samples: int  # rows of the feature matrix
    n_fitted: int  # rows PCA and KMeans were fitted on (n_samples, or a sample of MAX_FIT_ROWS)


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
    kmeans = KMeans(init="k-means++", n_clusters=min(n_clusters, len(reduced)), n_init=N_INIT, random_state=seed)
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
                      extent=np.array([low[0], high[0], low[1], high[1]], dtype=np.float64),
                      seed=seed, n_samples=n, n_fitted=len(reduced))


def save(path: Path, projection: Projection) -> Path:
    """Write ``projection`` as a byte-stable ``.npz`` that ``np.load`` reads (:func:`contract.save_npz`)."""
    arrays = {"points": projection.points, "centroids": projection.centroids, "regions": projection.regions,
              "extent": projection.extent, "seed": np.int64(projection.seed),
              "n_samples": np.int64(projection.n_samples), "n_fitted": np.int64(projection.n_fitted)}
    return save_npz(path, {name: arrays[name] for name in PROJECTION_FIELDS})
