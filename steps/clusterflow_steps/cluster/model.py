"""One fitted ``StandardScaler -> clusterer`` pipeline, K-Means exactly as scikit-learn's digits demo fits it.

The demo's three benchmarks are the three inits: ``k-means++`` and ``random`` (seeded, ``n_init``
runs) and ``pca``, which starts from the components of a PCA fitted on the *unscaled* data and runs
once. MiniBatchKMeans (for large data) gets the same pipeline, standardised in place, chunk by
chunk, so the only copy of the features in memory is the scaled one. The other clusterers
(:mod:`clusterflow_steps.cluster.algorithms`) are fitted by :func:`fit` as K-Means is.

scikit-learn is imported by the functions that fit, not by this module: a step that is a cache
hit, or answers ``--help``, never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterflow_steps import clusters
from clusterflow_steps.artifacts import UserError
from clusterflow_steps.contract import MODEL_ASSIGN, MODEL_PARAMS, NOISE

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

CHUNK_BYTES = clusters.CHUNK_BYTES  # rows per pass of the chunked standardisation and the inertia


@dataclass(frozen=True)
class Clustering:
    """A fitted pipeline and the figures the cluster step keeps of it.

    ``centers`` are in the ORIGINAL feature space (``scaler.inverse_transform`` of the K-Means
    centers or the Gaussian mixture's means; for Birch, which keeps only subcluster centroids, the
    mean of each cluster's points), so the report can draw digit centers as 8x8 images; ``None``
    for an algorithm without centers. ``inertia`` is K-Means' own, in the scaled space, as the demo
    reports it (for the other centered algorithms the same sum of squared distances to the assigned
    center; ``None`` without centers); ``n_init`` is the number of runs actually made.
    """

    pipeline: Pipeline
    labels: np.ndarray
    centers: np.ndarray | None
    inertia: float | None
    n_iter: int | None
    n_init: int | None
    fit_seconds: float

    @property
    def n_noise(self) -> int:
        return int(np.count_nonzero(self.labels == NOISE))

    @property
    def n_clusters(self) -> int:
        """Clusters found (noise is none)."""
        return int(np.unique(self.labels[self.labels != NOISE]).size)


def default_n_clusters(labels: np.ndarray) -> int:
    """The demo's ``n_digits``: the number of distinct true labels."""
    return int(np.unique(labels).size)


def check_n_clusters(n_clusters: int, n_samples: int, n_features: int, init: str | None = None) -> None:
    """Raise :class:`UserError` unless ``n_clusters`` clusters can be fitted (with K-Means' ``init``)."""
    if n_clusters < 2:
        raise UserError(f"n_clusters {n_clusters}: clustering needs 2 or more clusters; set --n-clusters")
    if n_clusters > n_samples:
        raise UserError(f"n_clusters {n_clusters} exceeds the {n_samples} samples: use --n-clusters "
                        f"{n_samples} or fewer")
    if init == "pca" and n_clusters > n_features:
        raise UserError(f"--init pca takes its {n_clusters} initial centers from PCA components, but the "
                        f"data have only {n_features} features: use --n-clusters {n_features} or fewer, "
                        "or another --init")


def make_kmeans(features: np.ndarray, n_clusters: int, init: str, n_init: int, seed: int, *,
                minibatch: bool = False, batch_size: int = 4096) -> KMeans | MiniBatchKMeans:
    """The demo's estimator for ``init``; ``features`` (unscaled) only matter for the ``pca`` init."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA

    if init == "pca":
        start, n_init = PCA(n_components=n_clusters, random_state=seed).fit(features).components_, 1
    else:
        start = init
    settings = {"n_clusters": n_clusters, "init": start, "n_init": n_init, "random_state": seed}
    return MiniBatchKMeans(batch_size=batch_size, **settings) if minibatch else KMeans(**settings)


def row_chunks(features: np.ndarray) -> list[slice]:
    """Row slices of about ``CHUNK_BYTES`` each, covering ``features``."""
    return clusters.row_chunks(features, CHUNK_BYTES)


Bar = Callable[[Iterable[slice], int, str], Iterator[slice]]


def _plain(items: Iterable[slice], length: int, label: str) -> Iterator[slice]:
    return iter(items)


def standardized(features: np.ndarray, bar: Bar = _plain) -> tuple[StandardScaler, np.ndarray]:
    """A ``StandardScaler`` fitted on ``features`` and ``features`` scaled by it, IN PLACE (both by chunks)."""
    from sklearn.preprocessing import StandardScaler

    scaler, chunks = StandardScaler(), row_chunks(features)
    for rows in bar(chunks, len(chunks), "scaler statistics"):
        scaler.partial_fit(features[rows])
    for rows in bar(chunks, len(chunks), "standardising"):
        scaler.transform(features[rows], copy=False)
    return scaler, features


def _scaled_centers(features: np.ndarray, pipeline: Pipeline, labels: np.ndarray) -> np.ndarray | None:
    """The fitted clusterer's centers in the scaled space, ``None`` where it has none."""
    scaler, fitted = pipeline[0], pipeline[-1]
    for name in ("cluster_centers_", "means_"):  # K-Means, the Gaussian mixture: in the fit's dtype
        if hasattr(fitted, name):
            centers: np.ndarray = getattr(fitted, name)
            return centers
    if hasattr(fitted, "subcluster_centers_"):  # Birch: the mean of each final cluster's points
        subclusters = fitted.subcluster_labels_
        means = np.asarray(scaler.transform(clusters.cluster_means(features, labels, int(subclusters.max()) + 1)))
        for empty in np.flatnonzero(np.isnan(means).any(axis=1)):  # no point left: its subclusters' mean
            means[empty] = fitted.subcluster_centers_[subclusters == empty].mean(axis=0)
        return means
    return None


def _inertia(features: np.ndarray, pipeline: Pipeline, labels: np.ndarray, centers: np.ndarray) -> float:
    """Sum of squared distances of the scaled samples to their cluster's (scaled) center."""
    fitted = pipeline[-1]
    if hasattr(fitted, "inertia_"):
        return float(fitted.inertia_)
    total = 0.0
    for rows in row_chunks(features):
        total += float(((pipeline[0].transform(features[rows]) - centers[labels[rows]]) ** 2).sum())
    return total


def fit(features: np.ndarray, estimator: BaseEstimator, *, overwrite: bool = False,
        bar: Bar = _plain) -> Clustering:
    """Fit ``make_pipeline(StandardScaler(), estimator)`` on ``features``, timed as the demo times it.

    A ``MiniBatchKMeans`` is fitted on the features standardised by chunks, in ``features`` itself
    when ``overwrite`` (no second copy in memory), else in a copy; the pipeline is the same.
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    if isinstance(estimator, MiniBatchKMeans):
        scaler, scaled = standardized(features if overwrite else np.array(features), bar)
        pipeline = make_pipeline(scaler, estimator.fit(scaled))  # both fitted: as pipeline.fit leaves them
        labels = estimator.labels_
    else:
        pipeline = make_pipeline(StandardScaler(), estimator)
        labels = pipeline.fit_predict(features)
    fit_seconds = time.perf_counter() - started
    scaled_centers = _scaled_centers(features, pipeline, labels)  # (only Birch's read the features)
    scaler, fitted = pipeline[0], pipeline[-1]
    centers = None if scaled_centers is None else scaler.inverse_transform(scaled_centers)
    inertia = None if scaled_centers is None else _inertia(features, pipeline, labels, scaled_centers)
    n_iter, n_init = getattr(fitted, "n_iter_", None), getattr(fitted, "n_init", None)
    return Clustering(pipeline=pipeline, labels=labels, centers=centers, inertia=inertia,
                      n_iter=None if n_iter is None else int(n_iter), n_init=None if n_init is None else int(n_init),
                      fit_seconds=fit_seconds)


def model_arrays(fitted: Clustering, algorithm: str, settings: dict[str, Any], n_clusters: int,
                 seed: int) -> dict[str, Any]:
    """``contract.MODEL_ARRAYS``' members for ``fitted``: plain arrays, strings as 0-d unicode arrays."""
    scaler, estimator = fitted.pipeline[0], fitted.pipeline[-1]
    arrays: dict[str, Any] = {} if fitted.centers is None else {"centers": fitted.centers}
    arrays.update(scaler_mean=scaler.mean_, scaler_scale=scaler.scale_, n_clusters=np.int64(n_clusters))
    arrays.update({name: _plain_value(settings[name]) for name in MODEL_PARAMS[algorithm]})
    arrays.update(seed=np.int64(seed), estimator=np.str_(type(estimator).__name__))
    arrays.update({name: np.asarray(getattr(estimator, f"{name}_")) for name in MODEL_ASSIGN.get(algorithm, ())})
    return arrays


def _plain_value(value: Any) -> Any:
    if isinstance(value, str):
        return np.str_(value)
    return np.int64(value) if isinstance(value, int) else np.float64(value)
