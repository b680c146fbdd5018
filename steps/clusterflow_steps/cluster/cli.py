"""The cluster step's click shell: fit one variant, write ``cluster/<variant>/`` atomically."""

from __future__ import annotations

import click
import numpy as np

from clusterflow_steps import threads
from clusterflow_steps.artifacts import StepRun, UserError, read_array, save_array, save_npz, validate_name
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command, step_options
from clusterflow_steps.cluster import model
from clusterflow_steps.contract import (
    CENTERS,
    CLUSTER_LABELS,
    FEATURES,
    LABELS,
    MODEL,
    MODEL_ARRAYS,
    MODEL_FIELDS,
    VARIANT,
    RunLayout,
)
from clusterflow_steps.progress import Progress


@step_command(f"Fit scikit-learn's StandardScaler -> KMeans pipeline on {FEATURES.relative()}, as the "
              f"digits demo does, and write cluster/<variant>/: {MODEL.name} (the fitted pipeline, a "
              f"pickle), {MODEL_ARRAYS.name} (the same model as plain arrays: centers, scaler mean and scale, "
              f"params), {CLUSTER_LABELS.name}, {CENTERS.name} (in the original feature space) and a manifest.")
@step_options("cluster")
@run_options
def main(layout: RunLayout, use_cache: bool, n_clusters: int | None, init: str, n_init: int, seed: int,
         variant: str | None, minibatch: bool, batch_size: int) -> None:
    variant = validate_name(variant or init, VARIANT)
    params = {"n_clusters": n_clusters, "init": init, "n_init": n_init, "seed": seed, "variant": variant,
              "minibatch": minibatch, "batch_size": batch_size}
    inputs = {"features": layout.path(FEATURES)}
    features = read_array(inputs["features"], FEATURES.producer(), mmap=True)
    if features.ndim != 2:
        raise UserError(f"{inputs['features']} has shape {features.shape}, not (samples, features): "
                        "re-run the prepare step")
    if n_clusters is None:
        inputs["labels"] = layout.path(LABELS)
        if not inputs["labels"].is_file():
            raise UserError("the prepared data have no labels to count clusters from: pass --n-clusters")
        n_clusters = model.default_n_clusters(read_array(inputs["labels"], LABELS.producer()))
    n_samples, n_features = features.shape
    model.check_n_clusters(n_clusters, n_samples, n_features, init)

    def work(run: StepRun) -> None:
        import joblib

        progress, data = Progress("cluster", features.size), features
        if minibatch:  # standardised in place: read into memory this step owns, the only copy
            with progress.phase(f"read {features.shape[0]} x {features.shape[1]} {features.dtype} features"):
                data = read_array(inputs["features"], FEATURES.producer())
        n_threads = threads.for_work(data.size)
        kmeans = model.make_kmeans(data, n_clusters, init, n_init, seed, minibatch=minibatch,
                                   batch_size=batch_size)
        with threads.limited(n_threads), progress.phase(f"fitted {type(kmeans).__name__} ({n_threads} threads)"):
            fitted = model.fit(data, kmeans, overwrite=minibatch, bar=progress.bar)
        with progress.phase("wrote the model, labels and centers"):
            joblib.dump(fitted.pipeline, run.out / MODEL.name)
            scaler = fitted.pipeline[0]
            save_npz(run.out / MODEL_ARRAYS.name, dict(zip(MODEL_FIELDS, (
                fitted.centers, scaler.mean_, scaler.scale_, np.int64(n_clusters), np.str_(init),
                np.int64(fitted.n_init), np.int64(seed), np.str_(type(kmeans).__name__)), strict=True)))
            save_array(run, CLUSTER_LABELS.name, fitted.labels)
            save_array(run, CENTERS.name, fitted.centers)
        run.results.update(inertia=fitted.inertia, fit_seconds=fitted.fit_seconds, n_iter=fitted.n_iter,
                           n_clusters=n_clusters, init=init, n_init=fitted.n_init,
                           estimator=type(kmeans).__name__, threads=n_threads)

    results = run_step(layout, "cluster", params, inputs, work, variant=variant, use_cache=use_cache).results
    click.echo(f"cluster: wrote {layout.step_dir('cluster', variant)} ({results['estimator']}, init {init}, "
               f"{n_clusters} clusters, inertia {results['inertia']:.0f}, {results['fit_seconds']:.3f}s)")
