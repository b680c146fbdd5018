"""The prepare step's click shell: load and validate a dataset, write ``prepare/`` atomically."""

from __future__ import annotations

from pathlib import Path

import click

from clusterflow_steps.artifacts import StepRun, UserError, save_array
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command, step_options
from clusterflow_steps.contract import FEATURES, LABELS, RunLayout
from clusterflow_steps.params import BUILTIN_DATASETS
from clusterflow_steps.prepare import datasets, limits
from clusterflow_steps.progress import Progress


@step_command("Load a dataset (scikit-learn's handwritten digits by default), validate it and write "
              f"{FEATURES.relative()}, {LABELS.relative()} (when the data have labels) and a manifest.")
@step_options("prepare", max_input_bytes={
    "default": limits.default_input_bytes,
    "show_default": f"1/{limits.MEMORY_SHARE} of the cgroup memory limit, else {limits.FALLBACK_INPUT_BYTES:,}"},
    max_csv_cell_chars={"default": limits.DEFAULT_CELL_CHARS})
@run_options
def main(layout: RunLayout, use_cache: bool, dataset: str, label_column: str | None, n_samples: int,
         n_features: int, n_centers: int, seed: int, max_input_bytes: int, max_csv_cell_chars: int) -> None:
    # The limits only refuse inputs, they never change the output of one that passes: not in params.
    bounds = limits.Limits(max_input_bytes, max_csv_cell_chars)
    params = {"dataset": dataset, "label_column": label_column, "seed": seed}
    if dataset == "synthetic":
        params.update(n_samples=n_samples, n_features=n_features, n_centers=n_centers)
    inputs = {}
    if dataset not in BUILTIN_DATASETS and Path(dataset).is_file():
        inputs["dataset"] = Path(dataset).resolve()

    def work(run: StepRun) -> None:
        progress = Progress("prepare")
        with progress.phase(f"loaded and checked dataset {dataset}"):
            try:
                data = datasets.load(dataset, label_column=label_column, n_samples=n_samples,
                                     n_features=n_features, n_centers=n_centers, seed=seed, limits=bounds)
            except MemoryError:
                raise UserError(f"prepare ran out of memory loading {dataset}: give the step more memory "
                                f"(CLUSTERFLOW_STEP_MEMORY) or lower {limits.INPUT_BYTES_OPTION} to refuse such "
                                "inputs before they are read") from None
            progress.elements = data.features.size
        with progress.phase(f"wrote {FEATURES.name}" + (f" and {LABELS.name}" if data.labels is not None else "")):
            save_array(run, FEATURES.name, data.features)
            if data.labels is not None:
                save_array(run, LABELS.name, data.labels)
        run.results.update(n_samples=data.features.shape[0], n_features=data.features.shape[1],
                           n_labels=data.n_labels, dtype=str(data.features.dtype))

    results = run_step(layout, "prepare", params, inputs, work, use_cache=use_cache).results
    labels = f"{results['n_labels']} distinct labels" if results["n_labels"] is not None else "no labels"
    click.echo(f"prepare: wrote {layout.step_dir('prepare')} ({results['n_samples']} x "
               f"{results['n_features']} {results.get('dtype')} features, {labels})")
