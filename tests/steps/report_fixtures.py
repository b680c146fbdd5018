"""Runs for the report step's tests, written through the artifact contract (not the other steps).

:func:`make_run` fits scikit-learn on small data and writes prepare, cluster and evaluate outputs
(evaluate's projection.npz by the evaluate step's own code) with :func:`step_output`, as the real
steps do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clusterflow_steps import contract
from clusterflow_steps.artifacts import save_array, save_json, step_output
from clusterflow_steps.contract import RunLayout
from clusterflow_steps.evaluate import projection

VARIANTS = ("k-means++", "random", "pca")
LABEL_METRICS = {
    "homogeneity": metrics.homogeneity_score, "completeness": metrics.completeness_score,
    "v_measure": metrics.v_measure_score, "adjusted_rand": metrics.adjusted_rand_score,
    "adjusted_mutual_info": metrics.adjusted_mutual_info_score,
}


def blobs(n_samples: int = 240, n_features: int = 64, centers: int = 4, seed: int = 0):
    return make_blobs(n_samples=n_samples, n_features=n_features, centers=centers, random_state=seed)


def make_run(data_root: Path, run_id: str = "r1", *, dataset: str = "digits",
             data: tuple[np.ndarray, np.ndarray | None] | None = None, with_labels: bool = True,
             variants: Sequence[str] = VARIANTS, n_clusters: int | None = None, gate_failures: Sequence[str] = (),
             prepare_params: dict[str, Any] | None = None, metric_overrides: dict[str, dict] | None = None,
             best: str | None = None, sweep: Sequence[int] = ()) -> RunLayout:
    """Write a complete prepare → cluster → evaluate run under ``data_root``; return its layout.

    ``data`` defaults to the digits for ``dataset="digits"``, else small blobs. ``gate_failures``
    makes evaluate fail its quality gate (exit status 3 in its manifest, as the real step records).
    ``sweep``: numbers of clusters, one variant ``kmeans-<init>-k<k>`` per init of ``variants`` and k
    (as ``--k`` names them).
    """
    layout = RunLayout(data_root, run_id)
    if data is None:
        data = load_digits(return_X_y=True) if dataset == "digits" else blobs()
    features, labels = data
    labels = labels if with_labels else None
    k = n_clusters or (len(np.unique(labels)) if labels is not None else 4)

    with step_output(layout, "prepare", {"dataset": dataset, "seed": 0, **(prepare_params or {})}) as run:
        save_array(run, contract.FEATURES.name, features)
        if labels is not None:
            save_array(run, contract.LABELS.name, labels)
        run.results.update(n_samples=len(features), n_features=features.shape[1])

    scores: dict[str, dict[str, Any]] = {}
    fits = [(f"kmeans-{init}-k{n}", init, n) for init in variants for n in sweep] or [(v, v, k) for v in variants]
    variants = [variant for variant, _, _ in fits]
    for variant, init, k in fits:
        if init == "pca":
            kmeans = KMeans(init=PCA(n_components=k).fit(features).components_, n_clusters=k, n_init=1)
        else:
            kmeans = KMeans(init=init, n_clusters=k, n_init=4, random_state=0)
        params = {"init": init, "n_clusters": k, "n_init": kmeans.n_init, "seed": 0}
        with step_output(layout, "cluster", params, variant=variant) as run:
            run.inputs["features"] = layout.path(contract.FEATURES)
            t0 = time.perf_counter()
            model = make_pipeline(StandardScaler(), kmeans).fit(features)
            fit_seconds = time.perf_counter() - t0
            centers = model[0].inverse_transform(model[-1].cluster_centers_)
            joblib.dump(model, run.out / contract.MODEL.name)
            save_array(run, contract.CLUSTER_LABELS.name, model[-1].labels_)
            save_array(run, contract.CENTERS.name, centers)
            run.results.update(inertia=float(model[-1].inertia_), fit_seconds=fit_seconds, n_clusters=k,
                               algorithm="kmeans", init=init)
        predicted = model[-1].labels_
        row = {"inertia": float(model[-1].inertia_), "fit_seconds": fit_seconds,
               "silhouette": float(metrics.silhouette_score(features, predicted, sample_size=300, random_state=0))}
        for name, score in LABEL_METRICS.items():
            row[name] = float(score(labels, predicted)) if labels is not None else None
        row.update((metric_overrides or {}).get(variant, {}))
        scores[variant] = row

    ranked_by = "adjusted_mutual_info" if labels is not None else "silhouette"  # as evaluate ranks by default
    if best is None:
        pick = min if ranked_by == "inertia" else max
        best = pick(scores, key=lambda v: scores[v][ranked_by])
    params = {"seed": 0, "rank_by": ranked_by, "min_ari": 0.99 if gate_failures else None}
    with step_output(layout, "evaluate", params) as run:
        for variant in variants:
            run.inputs[f"{variant}/labels"] = layout.path(contract.CLUSTER_LABELS, variant)
        save_json(run, contract.METRICS.name, {
            "variants": scores, "best": best, "ranked_by": ranked_by,
            "quality_gate": {"passed": not gate_failures, "failures": list(gate_failures),
                             "thresholds": {"min_ari": 0.99 if gate_failures else None, "min_silhouette": None}},
        })
        if features.shape[1] >= contract.PROJECTION_MIN_FEATURES:  # as the evaluate step does
            best_k = {variant: n for variant, _, n in fits}[best]
            projection.compute(features, best_k, seed=0).save(run.out / contract.PROJECTION.name)
        run.results.update(best=best)
        run.exit_status = contract.QUALITY_GATE_EXIT if gate_failures else 0
    return layout
