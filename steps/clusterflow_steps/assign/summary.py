"""An assignment summed up: what ``summary.json`` says besides which model made it."""

from __future__ import annotations

from typing import Any

import numpy as np

DISTANCE_SPACE = "euclidean, in the model's scaled space (its StandardScaler), to the assigned cluster's center"


def summarize(labels: np.ndarray, distances: np.ndarray, n_clusters: int) -> dict[str, Any]:
    """Counts per cluster (every cluster of the model, empty ones too) and the mean and max distance
    to the assigned center, per cluster (``None`` for an empty one) and over all rows."""
    counts = np.bincount(labels, minlength=n_clusters)
    sums = np.bincount(labels, weights=distances, minlength=n_clusters)
    highest = np.full(n_clusters, -np.inf)
    np.maximum.at(highest, labels, distances)
    per_cluster = {str(k): {"mean": float(sums[k] / counts[k]), "max": float(highest[k])} if counts[k] else
                   {"mean": None, "max": None} for k in range(n_clusters)}
    return {"n_samples": int(len(labels)), "counts": {str(k): int(counts[k]) for k in range(n_clusters)},
            "distance": {"space": DISTANCE_SPACE, "mean": float(distances.mean()), "max": float(distances.max()),
                         "per_cluster": per_cluster}}
