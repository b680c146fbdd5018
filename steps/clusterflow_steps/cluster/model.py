"""K-Means exactly as scikit-learn's digits demo fits it: one ``StandardScaler -> KMeans`` pipeline.

The demo's three benchmarks are the three inits: ``k-means++`` and ``random`` (seeded, ``n_init``
runs) and ``pca``, which starts from the components of a PCA fitted on the *unscaled* data and runs
once. MiniBatchKMeans (for large data) gets the same pipeline, standardised in place, chunk by
chunk, so the only copy of the features in memory is the scaled one.

scikit-learn is imported by the functions that fit, not by this module: a step that is a cache
hit, or answers ``--help``, never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clusterflow_steps.artifacts import UserError

if TYPE_CHECKING:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

CHUNK_BYTES = 4 << 20  # rows per pass of the chunked standardisation: about this many bytes (the
# scaler's float64 temporaries are a few times one chunk: 16 MiB chunks peaked 21 MiB higher at 1M)


@dataclass(frozen=True)
class Clustering:
    """A fitted pipeline and the figures the cluster step keeps of it.

    ``centers`` are in the ORIGINAL feature space (``scaler.inverse_transform`` of the K-Means
    centers), so the report can draw digit centers as 8x8 images; ``inertia`` is K-Means' own, in
    the scaled space, as the demo reports it; ``n_init`` is the number of runs actually made.
    """

    pipeline: Pipeline
    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int
    n_init: int
    fit_seconds: float


def default_n_clusters(labels: np.ndarray) -> int:
    """The demo's ``n_digits``: the number of distinct true labels."""
    return int(np.unique(labels).size)


def check_n_clusters(n_clusters: int, n_samples: int, n_features: int, init: str) -> None:
    """Raise :class:`UserError` unless ``n_clusters`` clusters can be fitted with ``init``."""
    if n_clusters < 2:
        raise UserError(f"n_clusters {n_clusters}: K-Means needs 2 or more clusters; set --n-clusters")
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
    step = max(1, CHUNK_BYTES // max(1, features.shape[1] * features.itemsize))
    return [slice(i, i + step) for i in range(0, len(features), step)]


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


def fit(features: np.ndarray, kmeans: KMeans | MiniBatchKMeans, *, overwrite: bool = False,
        bar: Bar = _plain) -> Clustering:
    """Fit ``make_pipeline(StandardScaler(), kmeans)`` on ``features``, timed as the demo times it.

    A ``MiniBatchKMeans`` is fitted on the features standardised by chunks, in ``features`` itself
    when ``overwrite`` (no second copy in memory), else in a copy; the pipeline is the same.
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    if isinstance(kmeans, MiniBatchKMeans):
        scaler, scaled = standardized(features if overwrite else np.array(features), bar)
        pipeline = make_pipeline(scaler, kmeans.fit(scaled))  # both fitted: as pipeline.fit leaves them
    else:
        pipeline = make_pipeline(StandardScaler(), kmeans).fit(features)
    fit_seconds = time.perf_counter() - started
    scaler, fitted = pipeline[0], pipeline[-1]
    return Clustering(pipeline=pipeline, labels=fitted.labels_,
                      centers=scaler.inverse_transform(fitted.cluster_centers_),
                      inertia=float(fitted.inertia_), n_iter=int(fitted.n_iter_), n_init=int(fitted.n_init),
                      fit_seconds=fit_seconds)
