"""The cluster step's click shell: fit one variant, write ``cluster/<variant>/`` atomically."""

from __future__ import annotations

import click
import numpy as np

from clusterflow_steps import threads
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command
from clusterflow_steps.cluster import model
from clusterflow_steps.artifacts import StepRun, UserError, read_array, save_array, save_npz, validate_name
from clusterflow_steps.contract import MODEL_ARRAYS, MODEL_FIELDS, VARIANT, RunLayout
from clusterflow_steps.progress import Progress

MODEL = "model.joblib"


@step_command("Fit scikit-learn's StandardScaler -> KMeans pipeline on prepare/features.npy, as the "
              "digits demo does, and write cluster/<variant>/: model.joblib (the fitted pipeline, a pickle), "
              "model.npz (the same model as plain arrays: centers, scaler mean and scale, params), "
              "labels.npy, centers.npy (in the original feature space) and a manifest.")
@click.option("--n-clusters", type=click.IntRange(min=2), default=None, show_envvar=True,
              show_default="the number of distinct labels",
              help="Number of clusters (required without labels).")
@click.option("--init", type=click.Choice(model.INITS), default="k-means++", show_envvar=True,
              help="k-means++ or random (seeded, --n-init runs), or pca: the components of a PCA of the "
                   "unscaled data as initial centers, one run.")
@click.option("--n-init", type=click.IntRange(min=1), default=4, show_envvar=True,
              help="K-Means runs with different seeds, the best kept (the pca init always runs once).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_envvar=True,
              help="random_state of K-Means (and of the PCA of the pca init).")
@click.option("--variant", default=None, show_envvar=True, show_default="the --init name",
              help="Output name under cluster/.")
@click.option("--minibatch/--no-minibatch", default=False, show_envvar=True,
              help="Fit MiniBatchKMeans (for large data), on the features standardised in place: "
                   "one copy of them in memory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_envvar=True,
              help="--minibatch: samples per mini-batch.")
@run_options
def main(layout: RunLayout, use_cache: bool, n_clusters: int | None, init: str, n_init: int, seed: int,
         variant: str | None, minibatch: bool, batch_size: int) -> None:
    variant = validate_name(variant or init, VARIANT)
    params = {"n_clusters": n_clusters, "init": init, "n_init": n_init, "seed": seed, "variant": variant,
              "minibatch": minibatch, "batch_size": batch_size}
    prepared = layout.step_dir("prepare")
    inputs = {"features": prepared / "features.npy"}
    features = read_array(inputs["features"], "prepare", mmap=True)
    if features.ndim != 2:
        raise UserError(f"{inputs['features']} has shape {features.shape}, not (samples, features): "
                        "re-run the prepare step")
    if n_clusters is None:
        inputs["labels"] = prepared / "labels.npy"
        if not inputs["labels"].is_file():
            raise UserError("the prepared data have no labels to count clusters from: pass --n-clusters")
        n_clusters = model.default_n_clusters(read_array(inputs["labels"], "prepare"))
    model.check_n_clusters(n_clusters, *features.shape, init)

    def work(run: StepRun) -> None:
        import joblib

        progress, data = Progress("cluster", features.size), features
        if minibatch:  # standardised in place: read into memory this step owns, the only copy
            with progress.phase(f"read {features.shape[0]} x {features.shape[1]} {features.dtype} features"):
                data = read_array(inputs["features"], "prepare")
        n_threads = threads.for_work(data.size)
        kmeans = model.make_kmeans(data, n_clusters, init, n_init, seed, minibatch=minibatch,
                                   batch_size=batch_size)
        with threads.limited(n_threads), progress.phase(f"fitted {type(kmeans).__name__} ({n_threads} threads)"):
            fitted = model.fit(data, kmeans, overwrite=minibatch, bar=progress.bar)
        with progress.phase("wrote the model, labels and centers"):
            joblib.dump(fitted.pipeline, run.out / MODEL)
            scaler = fitted.pipeline[0]
            save_npz(run.out / MODEL_ARRAYS.name, dict(zip(MODEL_FIELDS, (
                fitted.centers, scaler.mean_, scaler.scale_, np.int64(n_clusters), np.str_(init),
                np.int64(fitted.n_init), np.int64(seed), np.str_(type(kmeans).__name__)), strict=True)))
            save_array(run, "labels.npy", fitted.labels)
            save_array(run, "centers.npy", fitted.centers)
        run.results.update(inertia=fitted.inertia, fit_seconds=fitted.fit_seconds, n_iter=fitted.n_iter,
                           n_clusters=n_clusters, init=init, n_init=fitted.n_init,
                           estimator=type(kmeans).__name__, threads=n_threads)

    results = run_step(layout, "cluster", params, inputs, work, variant=variant, use_cache=use_cache).results
    click.echo(f"cluster: wrote {layout.step_dir('cluster', variant)} ({results['estimator']}, init {init}, "
               f"{n_clusters} clusters, inertia {results['inertia']:.0f}, {results['fit_seconds']:.3f}s)")
