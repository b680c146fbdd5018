"""The assign step's click shell: score a dataset with a run's best model, write ``assign/`` atomically.

It writes into the model run's own folder (``runs/<run>/assign/``, next to the model it used): the
scores belong to that model, and the run's report, manifest and gate are what vouch for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clusterflow_steps.artifacts import StepRun, UserError, read_json, save_array, save_json
from clusterflow_steps.assign import model, summary
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command, step_options
from clusterflow_steps.contract import (
    ASSIGN,
    ASSIGN_SUMMARY,
    ASSIGNMENTS,
    METRICS,
    MODEL_ARRAYS,
    ContractError,
    RunLayout,
    gate_failed,
)
from clusterflow_steps.params import BUILTIN_DATASETS, OPTIONS
from clusterflow_steps.prepare import datasets, limits
from clusterflow_steps.progress import Progress


def best_variant(layout: RunLayout, allow_failed_gate: bool) -> str:
    """The run's best variant by its ``metrics.json``; :class:`UserError` if the run has none, or its
    quality gate failed and that was not allowed."""
    metrics = read_json(layout.path(METRICS), METRICS.producer())
    best = metrics.get("best")
    if not isinstance(best, str):
        raise UserError(f"{layout.path(METRICS)} names no best variant: re-run the evaluate step")
    manifest = read_json(layout.manifest(METRICS.step), METRICS.producer())
    if gate_failed(metrics, manifest) and not allow_failed_gate:
        raise UserError(f"run {layout.run_id}'s best variant {best} failed its quality gate: score with a run "
                        f"that passed, or pass {OPTIONS['allow_failed_gate'].flag}")
    return best


@step_command(f"Assign each row of a dataset (read and checked as prepare reads it) to a cluster of the best "
              f"variant of a finished run (its {MODEL_ARRAYS.name}, no pickle) and write "
              f"{ASSIGNMENTS.relative()}, {ASSIGN_SUMMARY.relative()} (counts per cluster, distance to the "
              f"assigned center) and a manifest into that run. Only {', '.join(model.ASSIGNABLE)} models can "
              "assign new points.")
@step_options(ASSIGN, max_input_bytes={
    "default": limits.default_input_bytes,
    "show_default": f"1/{limits.MEMORY_SHARE} of the cgroup memory limit, else {limits.FALLBACK_INPUT_BYTES:,}"},
    max_csv_cell_chars={"default": limits.DEFAULT_CELL_CHARS})
@run_options
def main(layout: RunLayout, use_cache: bool, dataset: str, label_column: str | None, max_input_bytes: int,
         max_csv_cell_chars: int, allow_failed_gate: bool) -> None:
    variant = best_variant(layout, allow_failed_gate)
    try:
        model_path = layout.path(MODEL_ARRAYS, variant)
    except ContractError as exc:  # a best variant that is no name: a damaged metrics.json
        raise UserError(f"{layout.path(METRICS)}: {exc}; re-run the evaluate step") from None
    fitted = model.load(model_path, MODEL_ARRAYS.producer(variant))  # refuses dbscan and the like at once
    inputs = {"model": model_path, "metrics": layout.path(METRICS)}
    if dataset not in BUILTIN_DATASETS and Path(dataset).is_file():
        inputs["dataset"] = Path(dataset).resolve()
    params: dict[str, Any] = {"dataset": dataset, "label_column": label_column, "variant": variant}

    def work(run: StepRun) -> None:
        progress = Progress(ASSIGN)
        with progress.phase(f"loaded and checked dataset {dataset}"):
            data = datasets.load(dataset, label_column=label_column,
                                 limits=limits.Limits(max_input_bytes, max_csv_cell_chars))
        n_samples, n_features = data.features.shape
        if n_features != fitted.n_features:
            raise UserError(f"{dataset} has {n_features} features but the model of run {layout.run_id} "
                            f"({variant}) was fitted on {fitted.n_features}: give data with the same columns")
        progress.elements = data.features.size
        with progress.phase(f"assigned {n_samples} rows to {fitted.n_clusters} clusters ({fitted.algorithm})"):
            labels, distances = fitted.assign(data.features)
        save_array(run, ASSIGNMENTS.name, labels)
        scored = summary.summarize(labels, distances, fitted.n_clusters)
        save_json(run, ASSIGN_SUMMARY.name, {"model": {"run_id": layout.run_id, "variant": variant,
                                                       "algorithm": fitted.algorithm,
                                                       "n_clusters": fitted.n_clusters, "n_features": n_features},
                                             "dataset": dataset, **scored})
        run.results.update(variant=variant, algorithm=fitted.algorithm, n_samples=n_samples,
                           counts=scored["counts"], mean_distance=scored["distance"]["mean"])

    results = run_step(layout, ASSIGN, params, inputs, work, use_cache=use_cache).results
    click.echo(f"assign: wrote {layout.step_dir(ASSIGN)} ({results['n_samples']} rows of {dataset} assigned by "
               f"{results['variant']} ({results['algorithm']}) to {len(results['counts'])} clusters, mean "
               f"distance to the center {results['mean_distance']:.3f})")
