"""The report's functional core: a run's artifacts in, one HTML page out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clusterflow_steps.artifacts import image_record
from clusterflow_steps.contract import LABELS, PROJECTION_MIN_FEATURES
from clusterflow_steps.report import figures, page
from clusterflow_steps.report.inputs import RunInputs

DIGIT_FEATURES = 64  # 8x8 images


@dataclass(frozen=True)
class Report:
    html: str
    inputs: dict[str, Path]  # every file read, by path relative to the run directory
    results: dict[str, Any]


def render_run(run: RunInputs, *, generated_at: str | None = None) -> Report:
    n_samples, n_features = run.features.shape
    k = len(run.best_centers)

    decision, decision_note = None, ""
    if run.projection is not None:  # evaluate wrote one for data of PROJECTION_MIN_FEATURES or more
        decision = figures.decision_regions(run.projection, digits=run.is_digits)
    else:
        decision_note = (f"The PCA-reduced figure needs at least {PROJECTION_MIN_FEATURES} features; these data "
                         f"have {n_features}.")

    centers, centers_note = None, ""
    if n_features == DIGIT_FEATURES:
        sizes = np.bincount(np.asarray(run.best_labels, dtype=np.int64).clip(0), minlength=k)
        centers = figures.center_images(run.best_centers, run.best, sizes)
    else:
        centers_note = (f"Cluster centers are drawn as 8×8 images only for digits-shaped data "
                        f"({DIGIT_FEATURES} features); these data have {n_features}.")

    heatmap, heatmap_note = None, ""
    if run.true_labels is not None:
        heatmap = figures.contingency_heatmap(run.best_labels, run.true_labels, run.best)
    else:
        heatmap_note = (f"No true labels: prepare wrote no {LABELS.name}, so there is no cluster × label heat map "
                        "and the label-based scores are shown as \u2013.")

    html = page.render(
        run, generated_at=generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        decision=decision, decision_note=decision_note, centers=centers, centers_note=centers_note,
        heatmap=heatmap, heatmap_note=heatmap_note, report_image=image_record()["name"])
    results = {
        "page_bytes": len(html.encode("utf-8")),
        "best": run.best,
        "ranked_by": run.metrics.get("ranked_by"),
        "n_clusters": k,
        "n_samples": n_samples,
        "n_features": n_features,
        "figures": [name for name, fig in (("decision_regions", decision), ("cluster_centers", centers),
                                           ("contingency", heatmap)) if fig is not None],
        "quality_gate_passed": not run.gate_failed,
        "quality_gate_failures": run.gate_failures if run.gate_failed else [],
    }
    return Report(html, dict(run.read), results)

