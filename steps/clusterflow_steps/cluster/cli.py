"""The cluster step's click shell: fit one variant, write ``cluster/<variant>/`` atomically."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from clusterflow_steps import threads
from clusterflow_steps.artifacts import StepRun, UserError, read_array, save_array, save_npz, validate_name
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command, step_options
from clusterflow_steps.cluster import algorithms, kdistance, model
from clusterflow_steps.contract import (
    CENTERS,
    CLUSTER_LABELS,
    ESTIMATORS,
    FEATURES,
    K_DISTANCE,
    KMEANS_FAMILY,
    LABELS,
    MODEL,
    MODEL_ARRAYS,
    VARIANT,
    RunLayout,
)
from clusterflow_steps.params import ALGORITHM_OPTIONS, algorithm_problem, resolve_algorithm
from clusterflow_steps.cgroup import memory_limit
from clusterflow_steps.progress import Progress

# What the manifest records as params besides the algorithm's options (kmeans: exactly as before
# there were other algorithms, so its cache keys still hold).
COMMON_PARAMS = ("seed", "variant")


def given_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options set on the command line or in the environment (not left at their default)."""
    ctx = click.get_current_context()
    return {name: value for name, value in options.items()
            if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}


def recorded_params(algorithm: str, options: dict[str, Any]) -> dict[str, Any]:
    """The manifest's params (and cache key): the algorithm's options as given and the common ones."""
    params = {name: options[name] for name in (*ALGORITHM_OPTIONS[algorithm], *COMMON_PARAMS)
              if name in options}
    if algorithm in KMEANS_FAMILY:
        return {**params, "minibatch": algorithm == KMEANS_FAMILY[1]}
    return {"algorithm": algorithm, **params}


def describe(algorithm: str, settings: dict[str, Any]) -> str:
    """The settings on the step's last line (kmeans: its init, as before)."""
    if algorithm in KMEANS_FAMILY:
        return f"init {settings['init']}, "
    return "".join(f"{name.replace('_', ' ')} {value:.4g}, " if isinstance(value, float) else
                   f"{name.replace('_', ' ')} {value}, " for name, value in settings.items())


@step_command(f"Fit scikit-learn's StandardScaler -> clusterer pipeline on {FEATURES.relative()} (K-Means as the "
              f"digits demo does, or --algorithm) and write cluster/<variant>/: {MODEL.name} (the fitted pipeline, "
              f"a pickle), {MODEL_ARRAYS.name} (the same model as plain arrays: scaler mean and scale, centers, "
              f"params), {CLUSTER_LABELS.name} (-1: noise), {CENTERS.name} (in the original feature space, for "
              f"the algorithms with centers), {K_DISTANCE.name} (dbscan without --eps) and a manifest.")
@step_options("cluster")
@run_options
def main(layout: RunLayout, use_cache: bool, **options: Any) -> None:
    problem = algorithm_problem(options["algorithm"], given_options(options))
    if problem:
        raise UserError(problem)
    algorithm = resolve_algorithm(options["algorithm"], options["minibatch"])
    kmeans = algorithm in KMEANS_FAMILY
    variant = validate_name(options["variant"] or (options["init"] if kmeans else algorithm), VARIANT)
    options = {**options, "variant": variant}
    params = recorded_params(algorithm, options)
    inputs = {"features": layout.path(FEATURES)}
    features = read_array(inputs["features"], FEATURES.producer(), mmap=True)
    if features.ndim != 2:
        raise UserError(f"{inputs['features']} has shape {features.shape}, not (samples, features): "
                        "re-run the prepare step")
    n_samples, n_features = features.shape
    n_clusters: int | None = options["n_clusters"]
    if "n_clusters" in ALGORITHM_OPTIONS[algorithm]:
        if n_clusters is None:
            inputs["labels"] = layout.path(LABELS)
            if not inputs["labels"].is_file():
                raise UserError("the prepared data have no labels to count clusters from: pass --n-clusters")
            n_clusters = model.default_n_clusters(read_array(inputs["labels"], LABELS.producer()))
        model.check_n_clusters(n_clusters, n_samples=n_samples, n_features=n_features,
                               init=options["init"] if kmeans else None)
    settings = algorithms.settings(algorithm, options)
    algorithms.check(algorithm, settings, n_samples, memory_limit())

    def work(run: StepRun) -> None:
        import joblib

        progress, data = Progress("cluster", features.size), features
        minibatch = algorithm == KMEANS_FAMILY[1]
        if minibatch:  # standardised in place: read into memory this step owns, the only copy
            with progress.phase(f"read {features.shape[0]} x {features.shape[1]} {features.dtype} features"):
                data = read_array(inputs["features"], FEATURES.producer())
        n_threads = threads.for_work(data.size)
        if algorithm == "dbscan" and settings["eps"] is None:
            from sklearn.preprocessing import StandardScaler

            with threads.limited(n_threads), progress.phase("picked eps from the k-distance curve"):
                curve = kdistance.curve(StandardScaler().fit_transform(data), settings["min_samples"],
                                        settings["metric"])
                settings["eps"] = kdistance.knee(curve)
            save_array(run, K_DISTANCE.name, curve)
            run.results.update(eps_rule=kdistance.RULE)
        estimator = algorithms.estimator(algorithm, data, n_clusters, settings, options["seed"],
                                         options["batch_size"])
        with threads.limited(n_threads), progress.phase(f"fitted {type(estimator).__name__} ({n_threads} threads)"):
            fitted = model.fit(data, estimator, overwrite=minibatch, bar=progress.bar)
        if kmeans:
            settings["n_init"] = fitted.n_init  # the runs made (pca: one)
        found = fitted.n_clusters if fitted.centers is None else len(fitted.centers)  # (Birch may find fewer)
        with progress.phase("wrote the model, labels and centers"):
            joblib.dump(fitted.pipeline, run.out / MODEL.name)
            save_npz(run.out / MODEL_ARRAYS.name, model.model_arrays(fitted, algorithm, settings, found,
                                                                     options["seed"]))
            save_array(run, CLUSTER_LABELS.name, fitted.labels)
            if fitted.centers is not None:
                save_array(run, CENTERS.name, fitted.centers)
        run.results.update(inertia=fitted.inertia, fit_seconds=fitted.fit_seconds, n_iter=fitted.n_iter,
                           n_clusters=found, n_init=fitted.n_init, estimator=ESTIMATORS[algorithm],
                           algorithm=algorithm, n_noise=fitted.n_noise, threads=n_threads)
        run.results.update({"init": settings["init"]} if kmeans else settings)

    results = run_step(layout, "cluster", params, inputs, work, variant=variant, use_cache=use_cache).results
    inertia = "" if results["inertia"] is None else f", inertia {results['inertia']:.0f}"
    noise = "" if kmeans else f", {results['n_noise']} noise points"
    shown = {name: results[name] for name in settings if name in results}
    click.echo(f"cluster: wrote {layout.step_dir('cluster', variant)} ({results['estimator']}, "
               f"{describe(algorithm, shown)}{results['n_clusters']} clusters{noise}{inertia}, "
               f"{results['fit_seconds']:.3f}s)")
