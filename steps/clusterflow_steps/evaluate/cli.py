"""The evaluate step's click shell: score every variant, write ``evaluate/`` atomically, then gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from clusterflow_steps.cli import run_options, step_command
from clusterflow_steps.contract import (MANIFEST, QualityGateFailed, RunLayout, UserError, read_array,
                                        read_json, save_json, step_output)
from clusterflow_steps.evaluate import gate, metrics

METRICS = "metrics.json"


def gate_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One optional float option per quality-gate threshold."""
    for option, metric in reversed(gate.OPTIONS.items()):
        bound = "at least" if option.startswith("--min-") else "at most"
        help_text = f"Quality gate: the best variant's {metric} must be {bound} this."
        command = click.option(option, type=float, default=None, show_envvar=True, help=help_text)(command)
    return command


def variant_row(layout: RunLayout, variant: str, features: np.ndarray, true_labels: np.ndarray | None,
                seed: int, inputs: dict[str, Path]) -> dict[str, Any]:
    """Score one cluster variant, recording the files read in ``inputs``."""
    step = f"cluster (--variant {variant})"
    folder = layout.step_dir("cluster", variant)
    inputs[f"{variant}/manifest"], inputs[f"{variant}/labels"] = folder / MANIFEST, folder / "labels.npy"
    manifest = read_json(folder / MANIFEST, step)
    results = manifest.get("results") if isinstance(manifest, dict) else None
    if not isinstance(results, dict) or not {"inertia", "fit_seconds"} <= results.keys():
        raise UserError(f"{folder / MANIFEST} lacks the inertia and fit_seconds results: "
                        f"re-run the {step} step")
    labels = read_array(folder / "labels.npy", step)
    if labels.shape != (len(features),):
        raise UserError(f"{folder / 'labels.npy'} has shape {labels.shape} but prepare/features.npy has "
                        f"{len(features)} samples: re-run the {step} step")
    return metrics.scores(features, true_labels, labels, inertia=results["inertia"],
                          fit_seconds=results["fit_seconds"], seed=seed)


@step_command("Score every cluster variant of the run as the digits demo does (inertia, homogeneity, "
              "completeness, V-measure, ARI, AMI, silhouette), pick the best and write "
              "evaluate/metrics.json. Exits 3, after writing, if the best variant fails a quality gate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_envvar=True,
              help="random_state of the silhouette's draw of 300 samples.")
@click.option("--rank-by", type=click.Choice(metrics.RANKABLE), default=None, show_envvar=True,
              show_default="adjusted_mutual_info with labels, else inertia",
              help="Metric that picks the best variant (inertia: lowest, others: highest).")
@gate_options
@run_options
def main(layout: RunLayout, seed: int, rank_by: str | None, **limits: float | None) -> None:
    prepared = layout.step_dir("prepare")
    inputs = {"features": prepared / "features.npy"}
    features = read_array(inputs["features"], "prepare", mmap=True)
    true_labels = None
    if (prepared / "labels.npy").is_file():
        inputs["labels"] = prepared / "labels.npy"
        true_labels = read_array(inputs["labels"], "prepare")
    has_labels = true_labels is not None
    thresholds = gate.thresholds(limits, has_labels)
    ranked_by = rank_by or metrics.default_rank_by(has_labels)
    metrics.require_labels(ranked_by, "--rank-by", has_labels)
    variants = layout.cluster_variants()
    if not variants:
        raise UserError(f"no cluster outputs under {layout.step_dir('cluster')}: run the cluster step first")

    rows = {v: variant_row(layout, v, features, true_labels, seed, inputs) for v in variants}
    best = metrics.best_variant(rows, ranked_by)
    verdict = gate.check(rows[best], thresholds)
    params = {"seed": seed, "rank_by": rank_by, **limits}
    with step_output(layout, "evaluate", params) as run:
        save_json(run, METRICS, {"variants": rows, "best": best, "ranked_by": ranked_by,
                                 "quality_gate": verdict})
        run.inputs.update(inputs)
        run.results.update(best=best, ranked_by=ranked_by, quality_gate=verdict)
        run.exit_status = 0 if verdict["passed"] else QualityGateFailed.exit_code
    score = rows[best][ranked_by]
    click.echo(f"evaluate: wrote {layout.step_dir('evaluate') / METRICS}; best of {len(rows)} variants by "
               f"{ranked_by}: {best} ({'undefined' if score is None else f'{score:.3f}'})")
    if not verdict["passed"]:
        raise QualityGateFailed(gate.verdict(best, verdict))
    click.echo(f"evaluate: {gate.verdict(best, verdict)}")
