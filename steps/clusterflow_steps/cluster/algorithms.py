"""The clusterers besides K-Means: their settings with scikit-learn's defaults, their estimators, and
what each refuses before anything is allocated.

Every estimator gets the StandardScaler in front (:func:`clusterflow_steps.cluster.model.fit`), so
distances (DBSCAN's ``eps`` too) are in the scaled space. scikit-learn is imported by
:func:`estimator` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.cluster import model
from clusterflow_steps.contract import CENTERED, KMEANS_FAMILY, MODEL_PARAMS
from clusterflow_steps.params import (COVARIANCE_TYPES, DBSCAN_MIN_SAMPLES, DISTANCES, HDBSCAN_MIN_CLUSTER_SIZE,
                                      LINKAGES, flag)

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

# Agglomerative clustering (but single linkage, which scikit-learn runs on a minimum spanning tree)
# holds the condensed matrix of pairwise distances and scipy's working copy of it: 16 bytes a pair.
PAIR_BYTES = 16
QUADRATIC_MEMORY_SHARE = 2  # ... in at most half the step's memory: the features and the fit need the rest
FALLBACK_MEMORY = 4 << 30  # without a cgroup limit nor a readable physical memory size


def settings(algorithm: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``contract.MODEL_PARAMS[algorithm]`` from the step's ``options``, with scikit-learn's defaults
    where they are unset (DBSCAN's ``eps`` stays ``None``: :mod:`clusterflow_steps.cluster.kdistance`
    picks it); the K-Means family's ``init`` and ``n_init`` as given."""
    min_cluster_size = options.get("min_cluster_size") or HDBSCAN_MIN_CLUSTER_SIZE
    defaults = {"metric": DISTANCES[0], "linkage": LINKAGES[0], "covariance_type": COVARIANCE_TYPES[0],
                "min_cluster_size": min_cluster_size,
                "min_samples": DBSCAN_MIN_SAMPLES if algorithm == "dbscan" else min_cluster_size}
    found = {}
    for name in MODEL_PARAMS[algorithm]:
        value = options.get(name)
        found[name] = defaults.get(name) if value is None else value
    return found


def check(algorithm: str, settings: Mapping[str, Any], n_samples: int, memory: int | None) -> None:
    """Refuse (:class:`UserError`, one line) what cannot be fitted on ``n_samples`` samples in ``memory``
    bytes (``None``: the machine's), before anything is allocated for it."""
    for name in ("min_cluster_size", "min_samples"):  # (hdbscan's min_samples defaults to the first)
        if name in settings and settings[name] > n_samples:
            raise UserError(f"{flag(name)} {settings[name]} exceeds the {n_samples} samples: use {n_samples} "
                            "or fewer")
    if algorithm != "agglomerative" or settings["linkage"] == "single":
        return
    budget = (memory or _physical_memory()) // QUADRATIC_MEMORY_SHARE
    needed = PAIR_BYTES * n_samples * (n_samples - 1) // 2
    if needed > budget:
        most = int((2 * budget / PAIR_BYTES) ** 0.5)
        scalable = ", ".join(sorted({*CENTERED, "hdbscan"} - {"gaussian-mixture"}))
        raise UserError(f"agglomerative --linkage {settings['linkage']} needs about {needed / 2**20:,.0f} MiB for "
                        f"the pairwise distances of {n_samples:,} samples, over half the step's "
                        f"{2 * budget / 2**20:,.0f} MiB of memory: cluster a sample of at most {most:,} rows, "
                        f"or use --linkage single or a scalable algorithm ({scalable})")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return FALLBACK_MEMORY


def estimator(algorithm: str, features: np.ndarray, n_clusters: int | None, settings: Mapping[str, Any],
              seed: int, batch_size: int) -> BaseEstimator:
    """The unfitted clusterer of ``algorithm`` (DBSCAN's ``eps`` resolved); ``features`` (unscaled)
    only matter for K-Means' ``pca`` init."""
    from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, Birch
    from sklearn.mixture import GaussianMixture

    if algorithm in KMEANS_FAMILY:
        return model.make_kmeans(features, int(n_clusters or 0), settings["init"], settings["n_init"], seed,
                                 minibatch=algorithm == KMEANS_FAMILY[1], batch_size=batch_size)
    if algorithm == "dbscan":
        return DBSCAN(eps=settings["eps"], min_samples=settings["min_samples"], metric=settings["metric"])
    if algorithm == "hdbscan":  # copy=False: it may overwrite the scaled copy the pipeline hands it
        return HDBSCAN(min_cluster_size=settings["min_cluster_size"], min_samples=settings["min_samples"],
                       copy=False)
    if algorithm == "agglomerative":
        return AgglomerativeClustering(n_clusters=n_clusters, linkage=settings["linkage"])
    if algorithm == "gaussian-mixture":
        return GaussianMixture(n_components=n_clusters, covariance_type=settings["covariance_type"],
                               n_init=settings["n_init"], random_state=seed)
    return Birch(n_clusters=n_clusters)
