"""The digits demo's table row of one variant, and the ranking of variants by one metric.

scikit-learn is imported when scoring, not with this module (a cache hit never loads it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.contract import LABELS, ranked
from clusterflow_steps.params import LABEL_METRICS

# LABEL_METRICS: each is sklearn.metrics.<name>_score(true labels, labels); each rankable metric is
# ranked by contract.ranked
SILHOUETTE_SAMPLE = 300


def require_labels(metric: str, option: str, has_labels: bool) -> None:
    """Refuse ``option`` (which uses ``metric``) when the run has no true labels."""
    if metric in LABEL_METRICS and not has_labels:
        raise UserError(f"{option} uses {metric}, which needs true labels, but prepare wrote no {LABELS.name} "
                        "for this run: drop it, or prepare a dataset with labels")


def default_rank_by(has_labels: bool) -> str:
    return "adjusted_mutual_info" if has_labels else "inertia"


def silhouette(features: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """The demo's silhouette (euclidean, unscaled features, a seeded draw of up to 300 samples).

    The draw is ``silhouette_score``'s own (same permutation, same value), taken here so that
    only the drawn rows of memory-mapped ``features`` are read. ``None`` when it is undefined:
    the draw holds a single cluster, or one cluster per sample.
    """
    from sklearn.metrics import silhouette_score

    drawn = np.random.RandomState(seed).permutation(len(labels))[:SILHOUETTE_SAMPLE]
    try:
        return float(silhouette_score(features[drawn], labels[drawn], metric="euclidean"))
    except ValueError:
        return None


def scores(features: np.ndarray, true_labels: np.ndarray | None, labels: np.ndarray, *, inertia: float,
           fit_seconds: float, seed: int) -> dict[str, Any]:
    """One variant's row: the label-based scores are ``None`` without ``true_labels``."""
    from sklearn import metrics

    row: dict[str, Any] = {"inertia": float(inertia)}
    row.update({name: None if true_labels is None else float(getattr(metrics, f"{name}_score")(true_labels, labels))
                for name in LABEL_METRICS})
    row["silhouette"] = silhouette(features, labels, seed)
    row["fit_seconds"] = float(fit_seconds)
    return row


def best_variant(rows: dict[str, dict[str, Any]], metric: str) -> str:
    """The variant ranked first by ``metric`` (:func:`contract.ranked`: undefined values rank last,
    ties go by name)."""
    return ranked(rows, metric)[0]
