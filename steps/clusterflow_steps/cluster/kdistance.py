"""DBSCAN's ``eps`` when none is given: the knee of the k-distance curve.

The curve is the distance of every sample to its ``min_samples``-th nearest neighbour (itself
included, as DBSCAN counts a core point's neighbourhood), in the scaled space, sorted ascending: a
sample whose distance is at most ``eps`` is a core point. RULE says how the knee is picked.
"""

from __future__ import annotations

import numpy as np

RULE = ("the knee of the sorted k-distance curve (k = --min-samples): the point farthest below the "
        "straight line from its first to its last point, both axes scaled to [0, 1]")


def curve(scaled: np.ndarray, min_samples: int, metric: str) -> np.ndarray:
    """The sorted k-distance curve of the ``scaled`` samples (float64, one value per sample)."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=min_samples, metric=metric).fit(scaled).kneighbors(scaled)
    return np.sort(distances[:, -1]).astype(np.float64, copy=False)


def knee(distances: np.ndarray) -> float:
    """``eps`` by :data:`RULE` from a sorted curve; never 0 (DBSCAN needs a positive eps): the smallest
    positive distance then, or 1.0 when all samples coincide."""
    n = len(distances)
    x = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    span = distances[-1] - distances[0]
    y = (distances - distances[0]) / span if span > 0 else np.zeros(n)
    eps = float(distances[int(np.argmax(x - y))])
    positive = distances[distances > 0]
    return eps if eps > 0 else float(positive[0]) if len(positive) else 1.0
