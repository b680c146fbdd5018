"""The digits demo's table row of one variant, and the ranking of variants by one metric.

scikit-learn is imported when scoring, not with this module (a cache hit never loads it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.contract import CENTERS, LABELS, NOISE, ranked
from clusterflow_steps.params import LABEL_METRICS

# LABEL_METRICS: each is sklearn.metrics.<name>_score(true labels, labels); each rankable metric is
# ranked by contract.ranked
SILHOUETTE_SAMPLE = 300
# How each score treats noise points (label NOISE), as metrics.json records it.
NOISE_TREATMENT = {
    "inertia": "only algorithms with centers have it, and none of them marks noise",
    **{name: f"noise points (label {NOISE}) count as one more cluster, as scikit-learn's score counts the "
             "labels it is given" for name in LABEL_METRICS},
    "silhouette": "scored on the drawn samples that are not noise: noise is no cluster",
}


def require_labels(metric: str, option: str, has_labels: bool) -> None:
    """Refuse ``option`` (which uses ``metric``) when the run has no true labels."""
    if metric in LABEL_METRICS and not has_labels:
        raise UserError(f"{option} uses {metric}, which needs true labels, but prepare wrote no {LABELS.name} "
                        "for this run: drop it, or prepare a dataset with labels")


def default_rank_by(has_labels: bool) -> str:
    """AMI with labels; else the silhouette, not the inertia, which always prefers more clusters
    (a sweep over k would always pick the largest)."""
    return "adjusted_mutual_info" if has_labels else "silhouette"


def _drawn(labels: np.ndarray, seed: int) -> np.ndarray:
    """The silhouette's draw: ``silhouette_score``'s own (same permutation), noise left out."""
    drawn = np.random.RandomState(seed).permutation(len(labels))[:SILHOUETTE_SAMPLE]
    kept: np.ndarray = drawn[labels[drawn] != NOISE]
    return kept


def silhouette_undefined(labels: np.ndarray, seed: int) -> str | None:
    """Why the silhouette of ``labels`` is undefined (one line), or ``None``."""
    drawn = _drawn(labels, seed)
    if len(drawn) == 0:
        return "every drawn sample is noise"
    found = np.unique(labels[drawn]).size
    if found < 2:
        return "the drawn samples that are not noise hold a single cluster"
    if found >= len(drawn):
        return "each drawn sample is a cluster of its own"
    return None


def silhouette(features: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """The demo's silhouette (euclidean, unscaled features, a seeded draw of up to 300 samples).

    The draw is ``silhouette_score``'s own (same permutation, same value), taken here so that
    only the drawn rows of memory-mapped ``features`` are read; noise points are left out of it.
    ``None`` when it is undefined (:func:`silhouette_undefined`).
    """
    from sklearn.metrics import silhouette_score

    if silhouette_undefined(labels, seed):
        return None
    drawn = _drawn(labels, seed)
    return float(silhouette_score(features[drawn], labels[drawn], metric="euclidean"))


def undefined(row: dict[str, Any], labels: np.ndarray, seed: int) -> dict[str, str]:
    """Why each score of ``row`` that is ``None`` is undefined, by metric."""
    reasons = {"inertia": f"the algorithm has no centers (no {CENTERS.name})",
               **{name: f"the data have no true labels ({LABELS.name})" for name in LABEL_METRICS}}
    found = {name: reasons[name] for name in reasons if row.get(name) is None}
    if row.get("silhouette") is None:
        found["silhouette"] = silhouette_undefined(labels, seed) or "undefined"
    return found


def n_noise(labels: np.ndarray) -> int:
    return int(np.count_nonzero(labels == NOISE))


def scores(features: np.ndarray, true_labels: np.ndarray | None, labels: np.ndarray, *, inertia: float | None,
           fit_seconds: float, seed: int) -> dict[str, Any]:
    """One variant's row: the label-based scores are ``None`` without ``true_labels``, the inertia
    without centers, the silhouette where :func:`silhouette_undefined` says why."""
    from sklearn import metrics

    row: dict[str, Any] = {"inertia": None if inertia is None else float(inertia)}
    row.update({name: None if true_labels is None else float(getattr(metrics, f"{name}_score")(true_labels, labels))
                for name in LABEL_METRICS})
    row["silhouette"] = silhouette(features, labels, seed)
    row["fit_seconds"] = float(fit_seconds)
    return row


def best_variant(rows: dict[str, dict[str, Any]], metric: str) -> str:
    """The variant ranked first by ``metric`` (:func:`contract.ranked`: undefined values rank last,
    ties go by name)."""
    return ranked(rows, metric)[0]
