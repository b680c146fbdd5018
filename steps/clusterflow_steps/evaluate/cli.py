"""The evaluate step's click shell: score every variant, write ``evaluate/`` atomically, then gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from clusterflow_steps import threads
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command
from clusterflow_steps.artifacts import (QualityGateFailed, StepRun, UserError, read_array, read_json, require_input, save_json)
from clusterflow_steps.contract import MANIFEST, PROJECTION, PROJECTION_MIN_FEATURES, RunLayout
from clusterflow_steps.evaluate import gate, metrics, projection
from clusterflow_steps.progress import Progress

METRICS = "metrics.json"


def gate_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One optional float option per quality-gate threshold."""
    for option, metric in reversed(gate.OPTIONS.items()):
        bound = "at least" if option.startswith("--min-") else "at most"
        help_text = f"Quality gate: the best variant's {metric} must be {bound} this."
        command = click.option(option, type=float, default=None, show_envvar=True, help=help_text)(command)
    return command


def variant_inputs(layout: RunLayout, variant: str) -> dict[str, Path]:
    """The files of one cluster variant that evaluate reads, checked to exist."""
    step = f"cluster (--variant {variant})"
    folder = layout.step_dir("cluster", variant)
    return {f"{variant}/manifest": require_input(folder / MANIFEST, step),
            f"{variant}/labels": require_input(folder / "labels.npy", step)}


def variant_results(layout: RunLayout, variant: str, *keys: str) -> dict[str, Any]:
    """The ``results`` of a cluster variant's manifest; :class:`UserError` unless it has ``keys``."""
    step = f"cluster (--variant {variant})"
    path = layout.step_dir("cluster", variant) / MANIFEST
    manifest = read_json(path, step)
    results = manifest.get("results") if isinstance(manifest, dict) else None
    if not isinstance(results, dict) or not set(keys) <= results.keys():
        raise UserError(f"{path} lacks the {' and '.join(keys)} result{'s' if len(keys) > 1 else ''}: "
                        f"re-run the {step} step")
    return results


def variant_row(layout: RunLayout, variant: str, features: np.ndarray, true_labels: np.ndarray | None,
                seed: int) -> dict[str, Any]:
    """Score one cluster variant."""
    step = f"cluster (--variant {variant})"
    folder = layout.step_dir("cluster", variant)
    results = variant_results(layout, variant, "inertia", "fit_seconds")
    labels = read_array(folder / "labels.npy", step)
    if labels.shape != (len(features),):
        raise UserError(f"{folder / 'labels.npy'} has shape {labels.shape} but prepare/features.npy has "
                        f"{len(features)} samples: re-run the {step} step")
    return metrics.scores(features, true_labels, labels, inertia=results["inertia"],
                          fit_seconds=results["fit_seconds"], seed=seed)


def variant_n_clusters(layout: RunLayout, variant: str) -> int:
    """The number of clusters the cluster step fitted for ``variant`` (its manifest's results)."""
    value = variant_results(layout, variant, "n_clusters")["n_clusters"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{layout.step_dir('cluster', variant) / MANIFEST} lacks the n_clusters result: "
                        f"re-run the cluster (--variant {variant}) step")
    return value


def write_projection(run: StepRun, features: np.ndarray, n_clusters: int, seed: int, progress: Progress) -> None:
    """The report's decision-region figure data, evaluate/projection.npz (the report has no scikit-learn)."""
    if features.ndim != 2 or features.shape[1] < PROJECTION_MIN_FEATURES:
        return  # the report says why there is no such figure
    rows = min(len(features), projection.MAX_FIT_ROWS)  # PCA and KMeans fit a sample of at most this many
    with threads.limited(threads.for_work(rows * features.shape[1])), \
            progress.phase(f"projected to 2-D for the report's figure (PCA and KMeans on {rows:,} samples)"):
        projection.compute(features, n_clusters, seed).save(run.out / PROJECTION.name)


@step_command("Score every cluster variant of the run as the digits demo does (inertia, homogeneity, "
              "completeness, V-measure, ARI, AMI, silhouette), pick the best and write "
              "evaluate/metrics.json, and the PCA-reduced K-means data of the report's figure "
              "(evaluate/projection.npz). Exits 3, after writing, if the best variant fails a quality gate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_envvar=True,
              help="random_state of the silhouette's draw of 300 samples, and seed of the report "
                   "figure's PCA/KMeans fit and of its samples of large data.")
@click.option("--rank-by", type=click.Choice(metrics.RANKABLE), default=None, show_envvar=True,
              show_default="adjusted_mutual_info with labels, else inertia",
              help="Metric that picks the best variant (inertia: lowest, others: highest).")
@gate_options
@run_options
def main(layout: RunLayout, use_cache: bool, seed: int, rank_by: str | None, **limits: float | None) -> None:
    prepared = layout.step_dir("prepare")
    inputs = {"features": prepared / "features.npy"}
    features = read_array(inputs["features"], "prepare", mmap=True)
    has_labels = (prepared / "labels.npy").is_file()
    if has_labels:
        inputs["labels"] = prepared / "labels.npy"
    thresholds = gate.thresholds(limits, has_labels)
    ranked_by = rank_by or metrics.default_rank_by(has_labels)
    metrics.require_labels(ranked_by, "--rank-by", has_labels)
    variants = layout.cluster_variants()
    if not variants:
        raise UserError(f"no cluster outputs under {layout.step_dir('cluster')}: run the cluster step first")
    for variant in variants:
        inputs.update(variant_inputs(layout, variant))

    def work(run: StepRun) -> None:
        progress = Progress("evaluate", features.size)
        true_labels = read_array(inputs["labels"], "prepare") if has_labels else None
        # the heavy part, the silhouette, only ever sees its draw of samples: one thread is plenty
        with threads.limited(1), progress.phase(f"scored {len(variants)} variants (silhouette on a "
                                                f"draw of {metrics.SILHOUETTE_SAMPLE} samples)"):
            rows = {v: variant_row(layout, v, features, true_labels, seed)
                    for v in progress.bar(variants, len(variants), "scoring variants")}
        best = metrics.best_variant(rows, ranked_by)
        verdict = gate.check(rows[best], thresholds)
        save_json(run, METRICS, {"variants": rows, "best": best, "ranked_by": ranked_by,
                                 "quality_gate": verdict})
        write_projection(run, features, variant_n_clusters(layout, best), seed, progress)
        run.results.update(best=best, ranked_by=ranked_by, quality_gate=verdict, n_variants=len(rows),
                           best_metrics=rows[best])
        run.exit_status = 0 if verdict["passed"] else QualityGateFailed.exit_code

    params = {"seed": seed, "rank_by": rank_by, **limits}
    results = run_step(layout, "evaluate", params, inputs, work, use_cache=use_cache).results
    best, verdict = results["best"], results["quality_gate"]
    score = results["best_metrics"][ranked_by]
    click.echo(f"evaluate: wrote {layout.step_dir('evaluate') / METRICS}; best of {results['n_variants']} "
               f"variants by {ranked_by}: {best} ({'undefined' if score is None else f'{score:.3f}'})")
    if not verdict["passed"]:
        raise QualityGateFailed(gate.verdict(best, verdict))
    click.echo(f"evaluate: {gate.verdict(best, verdict)}")
    # Last line: a one-line summary for orchestrators (the DAG pushes it as the task's XCom).
    click.echo(json.dumps({"best": best, "ranked_by": ranked_by, "metrics": results["best_metrics"],
                           "quality_gate": verdict}, sort_keys=True, allow_nan=False))
