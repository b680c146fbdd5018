"""The digits demo's table row of one variant, and the ranking of variants by one metric."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics

from clusterflow_steps.contract import UserError

LABEL_METRICS = {
    "homogeneity": metrics.homogeneity_score,
    "completeness": metrics.completeness_score,
    "v_measure": metrics.v_measure_score,
    "adjusted_rand": metrics.adjusted_rand_score,
    "adjusted_mutual_info": metrics.adjusted_mutual_info_score,
}
RANKABLE = ("inertia", *LABEL_METRICS, "silhouette")
ASCENDING = frozenset({"inertia"})  # lower is better; every other rankable metric: higher is better
SILHOUETTE_SAMPLE = 300


def require_labels(metric: str, option: str, has_labels: bool) -> None:
    """Refuse ``option`` (which uses ``metric``) when the run has no true labels."""
    if metric in LABEL_METRICS and not has_labels:
        raise UserError(f"{option} uses {metric}, which needs true labels, but prepare wrote no labels.npy "
                        "for this run: drop it, or prepare a dataset with labels")


def default_rank_by(has_labels: bool) -> str:
    return "adjusted_mutual_info" if has_labels else "inertia"


def silhouette(features: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """The demo's silhouette (euclidean, unscaled features, a seeded draw of up to 300 samples).

    ``None`` when it is undefined: the draw holds a single cluster, or one cluster per sample.
    """
    try:
        return float(metrics.silhouette_score(features, labels, metric="euclidean",
                                              sample_size=min(SILHOUETTE_SAMPLE, len(labels)),
                                              random_state=seed))
    except ValueError:
        return None


def scores(features: np.ndarray, true_labels: np.ndarray | None, labels: np.ndarray, *, inertia: float,
           fit_seconds: float, seed: int) -> dict[str, Any]:
    """One variant's row: the label-based scores are ``None`` without ``true_labels``."""
    row: dict[str, Any] = {"inertia": float(inertia)}
    row.update({name: None if true_labels is None else float(score(true_labels, labels))
                for name, score in LABEL_METRICS.items()})
    row["silhouette"] = silhouette(features, labels, seed)
    row["fit_seconds"] = float(fit_seconds)
    return row


def best_variant(rows: dict[str, dict[str, Any]], metric: str) -> str:
    """The variant ranked first by ``metric``; undefined values rank last, ties go by name."""
    sign = 1.0 if metric in ASCENDING else -1.0

    def rank(variant: str) -> tuple[bool, float, str]:
        value = rows[variant][metric]
        return value is None, 0.0 if value is None else sign * value, variant

    return min(rows, key=rank)
