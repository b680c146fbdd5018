"""The evaluate step's click shell: score every variant, write ``evaluate/`` atomically, then gate."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np

from clusterflow_steps import threads
from clusterflow_steps.artifacts import QualityGateFailed, StepRun, save_json
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command, step_options
from clusterflow_steps.contract import METRICS, PROJECTION, PROJECTION_MIN_FEATURES, RunLayout, projection_clusters
from clusterflow_steps.evaluate import gate, inputs, metrics, projection
from clusterflow_steps.params import OPTIONS
from clusterflow_steps.progress import Progress


def write_projection(run: StepRun, features: np.ndarray, n_clusters: int, seed: int, progress: Progress) -> None:
    """The report's decision-region figure data, PROJECTION (the report has no scikit-learn)."""
    if features.ndim != 2 or features.shape[1] < PROJECTION_MIN_FEATURES:
        return  # the report says why there is no such figure
    rows = min(len(features), projection.MAX_FIT_ROWS)  # PCA and KMeans fit a sample of at most this many
    with threads.limited(threads.for_work(rows * features.shape[1])), \
            progress.phase(f"projected to 2-D for the report's figure (PCA and KMeans on {rows:,} samples)"):
        projection.compute(features, projection_clusters(n_clusters, rows), seed).save(run.out / PROJECTION.name)


@step_command("Score every cluster variant of the run as the digits demo does (inertia, homogeneity, "
              "completeness, V-measure, ARI, AMI, silhouette; null with the reason where undefined; the noise "
              f"points of each and how each score treats them), pick the best and write {METRICS.relative()}, "
              f"and the PCA-reduced K-means data of the report's figure ({PROJECTION.relative()}). Exits "
              f"{QualityGateFailed.exit_code}, after writing, if the best variant fails a quality gate.")
@step_options("evaluate")
@run_options
def main(layout: RunLayout, use_cache: bool, seed: int, rank_by: str | None, **limits: float | None) -> None:
    prepared = inputs.read_prepared(layout)
    features, has_labels = prepared.features, prepared.has_labels
    thresholds = gate.thresholds(limits, has_labels)
    ranked_by = rank_by or metrics.default_rank_by(has_labels)
    metrics.require_labels(ranked_by, OPTIONS["rank_by"].flag, has_labels)
    variants = layout.cluster_variants()
    read = {**prepared.read, **inputs.variant_inputs(layout, variants)}

    noise: dict[str, int] = {}
    undefined: dict[str, dict[str, str]] = {}

    def score_variant(variant: str, true_labels: np.ndarray | None) -> dict[str, Any]:
        results = inputs.variant_results(layout, variant, "inertia", "fit_seconds")
        labels = inputs.variant_labels(layout, variant, len(features))
        row = metrics.scores(features, true_labels, labels, inertia=results["inertia"],
                             fit_seconds=results["fit_seconds"], seed=seed)
        noise[variant] = metrics.n_noise(labels)
        if reasons := metrics.undefined(row, labels, seed):
            undefined[variant] = reasons
        return row

    def work(run: StepRun) -> None:
        progress = Progress("evaluate", features.size)
        true_labels = prepared.true_labels()
        # the heavy part, the silhouette, only ever sees its draw of samples: one thread is plenty
        with threads.limited(1), progress.phase(f"scored {len(variants)} variants (silhouette on a "
                                                f"draw of {metrics.SILHOUETTE_SAMPLE} samples)"):
            rows = {v: score_variant(v, true_labels) for v in progress.bar(variants, len(variants), "scoring variants")}
        best = metrics.best_variant(rows, ranked_by)
        verdict = gate.check(rows[best], thresholds)
        save_json(run, METRICS.name, {"variants": rows, "best": best, "ranked_by": ranked_by,
                                      "quality_gate": verdict, "undefined": undefined,
                                      "noise": {"points": noise, "treatment": metrics.NOISE_TREATMENT}})
        write_projection(run, features, inputs.variant_n_clusters(layout, best), seed, progress)
        run.results.update(best=best, ranked_by=ranked_by, quality_gate=verdict, n_variants=len(rows),
                           best_metrics=rows[best])
        run.exit_status = 0 if verdict["passed"] else QualityGateFailed.exit_code

    params = {"seed": seed, "rank_by": rank_by, **limits}
    results = run_step(layout, "evaluate", params, read, work, use_cache=use_cache).results
    best, verdict = results["best"], results["quality_gate"]
    score = results["best_metrics"][ranked_by]
    click.echo(f"evaluate: wrote {layout.path(METRICS)}; best of {results['n_variants']} "
               f"variants by {ranked_by}: {best} ({'undefined' if score is None else f'{score:.3f}'})")
    if verdict["passed"]:
        click.echo(f"evaluate: {gate.verdict(best, verdict)}")
    # Last stdout line, a breach too: a one-line summary for orchestrators (the DAG's XCom, email, Assets).
    click.echo(json.dumps({"best": best, "ranked_by": ranked_by, "metrics": results["best_metrics"],
                           "quality_gate": verdict}, sort_keys=True, allow_nan=False))
    if not verdict["passed"]:
        raise QualityGateFailed(gate.verdict(best, verdict))
