"""The prepare step's click shell: load and validate a dataset, write ``prepare/`` atomically."""

from __future__ import annotations

from pathlib import Path

import click

from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command
from clusterflow_steps.artifacts import StepRun, UserError, save_array
from clusterflow_steps.contract import RunLayout
from clusterflow_steps.prepare import datasets, limits
from clusterflow_steps.progress import Progress

FEATURES = "features.npy"
LABELS = "labels.npy"


@step_command("Load a dataset (scikit-learn's handwritten digits by default), validate it and write "
              "prepare/features.npy, prepare/labels.npy (when the data have labels) and a manifest.")
@click.option("--dataset", default="digits", show_envvar=True,
              help="digits (load_digits), synthetic (Gaussian blobs) or the path of a .csv (header row), "
                   ".npy (2-D features) or .npz (array X, optional y) file.")
@click.option("--label-column", default=None, show_envvar=True,
              help=".csv only: the column holding true labels (default: the data have no labels).")
@click.option("--n-samples", type=click.IntRange(min=2), default=10_000, show_envvar=True,
              help="synthetic: number of samples.")
@click.option("--n-features", type=click.IntRange(min=1), default=64, show_envvar=True,
              help="synthetic: number of features.")
@click.option("--n-centers", type=click.IntRange(min=1), default=10, show_envvar=True,
              help="synthetic: number of blob centers (= distinct labels).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_envvar=True,
              help="synthetic: random seed of the blobs.")
@click.option(limits.INPUT_BYTES_OPTION, "max_input_bytes", type=click.IntRange(min=1),
              default=limits.default_input_bytes, show_envvar=True,
              show_default=f"1/{limits.MEMORY_SHARE} of the cgroup memory limit, else {limits.FALLBACK_INPUT_BYTES:,}",
              help="Input files: the most bytes their arrays may take in memory, checked before they are read "
                   f"(a CSV line may hold 1/{limits.LINE_CHARS_PER_BYTE} of it in characters).")
@click.option(limits.CELL_CHARS_OPTION, "max_csv_cell_chars", type=click.IntRange(min=1),
              default=limits.DEFAULT_CELL_CHARS, show_envvar=True,
              help=".csv only: the most characters in one cell (header names and labels included).")
@run_options
def main(layout: RunLayout, use_cache: bool, dataset: str, label_column: str | None, n_samples: int,
         n_features: int, n_centers: int, seed: int, max_input_bytes: int, max_csv_cell_chars: int) -> None:
    # The limits only refuse inputs, they never change the output of one that passes: not in params.
    bounds = limits.Limits(max_input_bytes, max_csv_cell_chars)
    params = {"dataset": dataset, "label_column": label_column, "seed": seed}
    if dataset == "synthetic":
        params.update(n_samples=n_samples, n_features=n_features, n_centers=n_centers)
    inputs = {}
    if dataset not in datasets.BUILTIN and Path(dataset).is_file():
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
        with progress.phase(f"wrote {FEATURES}" + (f" and {LABELS}" if data.labels is not None else "")):
            save_array(run, FEATURES, data.features)
            if data.labels is not None:
                save_array(run, LABELS, data.labels)
        run.results.update(n_samples=data.features.shape[0], n_features=data.features.shape[1],
                           n_labels=data.n_labels, dtype=str(data.features.dtype))

    results = run_step(layout, "prepare", params, inputs, work, use_cache=use_cache).results
    labels = f"{results['n_labels']} distinct labels" if results["n_labels"] is not None else "no labels"
    click.echo(f"prepare: wrote {layout.step_dir('prepare')} ({results['n_samples']} x "
               f"{results['n_features']} {results.get('dtype')} features, {labels})")
