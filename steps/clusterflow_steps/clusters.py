"""Figures of a clustering computed with numpy alone, by chunks of rows: the cluster step and the
report (whose image has no scikit-learn) both use them."""

from __future__ import annotations

import numpy as np

from clusterflow_steps.contract import NOISE

CHUNK_BYTES = 4 << 20  # rows per pass: about this many bytes (the scaler's float64 temporaries are a
# few times one chunk: 16 MiB chunks peaked 21 MiB higher at 1M)


def row_chunks(features: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> list[slice]:
    """Row slices of about ``chunk_bytes`` each, covering ``features``."""
    step = max(1, chunk_bytes // max(1, features.shape[1] * features.itemsize))
    return [slice(i, i + step) for i in range(0, len(features), step)]


def cluster_means(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """The mean of each cluster's points (rows 0..n_clusters-1, float64; noise left out); NaN for a
    cluster without points. Reads ``features`` (possibly memory-mapped) once, by chunks."""
    sums, counts = np.zeros((n_clusters, features.shape[1])), np.zeros(n_clusters)
    for rows in row_chunks(features):
        members = labels[rows]
        inside = members != NOISE
        np.add.at(sums, members[inside], features[rows][inside])
        counts += np.bincount(members[inside], minlength=n_clusters)[:n_clusters]
    with np.errstate(invalid="ignore", divide="ignore"):
        means: np.ndarray = sums / counts[:, None]
    return means
