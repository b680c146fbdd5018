"""The report's functional core: a run's artifacts in, one HTML page out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clusterflow_steps.artifacts import image_record
from clusterflow_steps.clusters import cluster_means
from clusterflow_steps.contract import ESTIMATORS, KMEANS_FAMILY, LABELS, NOISE, PROJECTION_MIN_FEATURES
from clusterflow_steps.report import figures, page
from clusterflow_steps.report.inputs import RunInputs

DIGIT_FEATURES = 64  # 8x8 images


@dataclass(frozen=True)
class Report:
    html: str
    inputs: dict[str, Path]  # every file read, by path relative to the run directory
    results: dict[str, Any]


def _decision_note(run: RunInputs) -> str:
    """What the K-Means illustration is for a best variant of another algorithm."""
    if run.best_algorithm in KMEANS_FAMILY:
        return ""
    return (f"The best variant is {ESTIMATORS[run.best_algorithm]}, not K-Means: the figure illustrates K-Means "
            f"with its number of clusters ({run.n_clusters}, at least 1) on the same reduced data, not its own "
            "clustering.")


def _centers(run: RunInputs, n_features: int) -> tuple[figures.Figure | None, str]:
    """The best variant's centers as 8x8 images (the means of its clusters where it has none), or a note."""
    k = run.n_clusters
    if n_features != DIGIT_FEATURES:
        return None, (f"Cluster centers are drawn as 8×8 images only for digits-shaped data "
                      f"({DIGIT_FEATURES} features); these data have {n_features}.")
    if k == 0:
        return None, f"Every sample of the best variant is noise (label {NOISE}): there is no cluster to draw."
    labels = np.asarray(run.best_labels, dtype=np.int64)
    sizes = np.bincount(labels[labels != NOISE], minlength=k)
    if run.best_centers is not None:
        return figures.center_images(run.best_centers, run.best, sizes), ""
    means = cluster_means(run.features, labels, k)
    return figures.center_images(means, run.best, sizes, means_of=ESTIMATORS[run.best_algorithm]), ""


def _k_distance(run: RunInputs) -> figures.Figure | None:
    results = run.best_results
    if run.best_k_distance is None or not {"eps", "min_samples"} <= results.keys():
        return None
    return figures.k_distance(run.best_k_distance, float(results["eps"]), int(results["min_samples"]), run.best,
                              str(results.get("eps_rule") or "the knee of the curve"))


def render_run(run: RunInputs, *, generated_at: str | None = None) -> Report:
    n_samples, n_features = run.features.shape
    k = run.n_clusters

    decision, decision_note = None, ""
    if run.projection is not None:  # evaluate wrote one for data of PROJECTION_MIN_FEATURES or more
        decision = figures.decision_regions(run.projection, digits=run.is_digits, note=_decision_note(run))
    else:
        decision_note = (f"The PCA-reduced figure needs at least {PROJECTION_MIN_FEATURES} features; these data "
                         f"have {n_features}.")

    centers, centers_note = _centers(run, n_features)
    k_distance = _k_distance(run)
    curves = run.k_curves()
    k_curves = figures.k_curves(curves, run.variants, run.best, str(run.metrics.get("ranked_by") or "")) \
        if curves else None

    heatmap, heatmap_note = None, ""
    if run.true_labels is not None:
        heatmap = figures.contingency_heatmap(run.best_labels, run.true_labels, run.best)
    else:
        heatmap_note = (f"No true labels: prepare wrote no {LABELS.name}, so there is no cluster × label heat map "
                        "and the label-based scores are shown as \u2013.")

    html = page.render(
        run, generated_at=generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        decision=decision, decision_note=decision_note, centers=centers, centers_note=centers_note,
        heatmap=heatmap, heatmap_note=heatmap_note, k_distance=k_distance, k_curves=k_curves,
        report_image=image_record()["name"])
    results = {
        "page_bytes": len(html.encode("utf-8")),
        "best": run.best,
        "ranked_by": run.metrics.get("ranked_by"),
        "n_clusters": k,
        "n_samples": n_samples,
        "n_features": n_features,
        "figures": [name for name, fig in (("decision_regions", decision), ("cluster_centers", centers),
                                           ("contingency", heatmap), ("k_distance", k_distance),
                                           ("k_curves", k_curves)) if fig is not None],
        "quality_gate_passed": not run.gate_failed,
        "quality_gate_failures": run.gate_failures if run.gate_failed else [],
    }
    return Report(html, dict(run.read), results)

