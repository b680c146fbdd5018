"""``clusterflow`` on the host: run the whole pipeline as containers, like the DAG does."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import docker
import docker.errors

from clusterflow_steps.contract import ASSIGN, RunId, RunLayout

from clusterflow import dataroot, engine, pinning, spec
from clusterflow.reproduce import reproduce_command
from clusterflow.runner import LocalRunner, PipelineFailed, PipelineImageMissing
from clusterflow.version import VERSION
from clusterflow_steps.params import OPTIONS, PIPELINE, parse_sweep


def _param_options(command: Any) -> Any:
    """One click option per :class:`spec.PipelineParams` field, from the one parameter table."""
    for option in reversed(list(PIPELINE.values())):
        settings: dict[str, Any] = {"help": option.help, "default": option.default,
                                    "show_default": option.show_default or True}
        if option.entries:  # --sweep: JSON, or a file of it
            decl = click.option(option.flag, option.name, type=click.UNPROCESSED, callback=_sweep,
                                metavar="JSON|FILE", **settings)
        elif option.multiple:  # --init, repeated: one cluster task per strategy
            decl = click.option("--init", option.name, multiple=True, type=click.Choice(option.choices or ()),
                                **settings)
        elif option.kind is bool:
            decl = click.option(f"{option.flag}/{option.no_flag}", option.name, **settings)
        else:  # bounds are PipelineParams' to check: its one-line message
            decl = click.option(option.flag, option.name, type=option.kind, **settings)
        command = decl(command)
    return command


def _sweep(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[dict[str, Any], ...]:
    """``--sweep``'s value: its JSON, given inline or in a file (click passes the default, ``()``, as it is)."""
    if isinstance(value, tuple):
        return value
    try:
        text = value if value.lstrip().startswith("[") else Path(value).read_text()
        return parse_sweep(text)
    except OSError as exc:
        raise click.BadParameter(f"{value}: {exc.strerror}: give the JSON list or the path of a file "
                                 "holding it") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION)
def main() -> None:
    """clusterflow: the digits K-Means pipeline as containers."""


@main.command()
@click.option("--run-id", default=lambda: dt.datetime.now().strftime("run-%Y%m%d-%H%M%S"),
              show_default="run-<date>-<time>", help="Run id: 1-128 letters, digits and '._-'.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"),
              show_default=True, help="Host directory mounted at /data in every step.")
@click.option("--image-tag", default=VERSION, show_default=True,
              help="Tag of the clusterflow/<step> images (the local builds, or resolved once in "
                   f"${pinning.REGISTRY_ENV}); unused with a digests file.")
@click.option("--digests", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Digests file of a publish: run its images by digest (overrides ${pinning.DIGESTS_ENV}; "
                   f"${pinning.REGISTRY_ENV} alone resolves --image-tag in that registry once).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              show_default=f"all of them, at most {spec.PARALLEL_TASKS}",
              help="How many cluster tasks (variants x --k) run at once.")
@_param_options
def run(run_id: str, data_dir: Path, image_tag: str, digests: Path | None, jobs: int | None, **params: Any) -> None:
    """Run prepare, cluster (one per init and --k, concurrently), evaluate and report as containers."""
    try:
        pipeline_params = spec.PipelineParams(**params)
        checked_run_id = RunId(run_id)  # checked here, once: the runner, spec and dataroot take it as it is
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        limits = spec.step_limits()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    client, images = _engine(spec.STEPS, image_tag, digests)
    runner = LocalRunner(client, data_dir, limits=limits, jobs=jobs)
    report = _launched(lambda: runner.run(checked_run_id, pipeline_params, images))
    click.echo(f"report: {report}")


def _engine(steps: tuple[str, ...], image_tag: str, digests: Path | None) -> tuple[docker.DockerClient, pinning.Images]:
    """The reachable engine and the images of ``steps``, resolved once; exits with one line otherwise."""
    host = os.environ.get("DOCKER_HOST")
    where = f"at DOCKER_HOST={host}" if host else "on the local socket (DOCKER_HOST is unset)"
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise click.ClickException(engine.unreachable(where, exc)) from None
    environ = {**os.environ, **({pinning.DIGESTS_ENV: str(digests)} if digests else {})}
    try:
        return client, pinning.resolve(environ, image_tag, pinning.engine_digests(client.api), steps)
    except ValueError as exc:
        click.echo(f"clusterflow: {exc}", err=True)
        sys.exit(2)


def _launched(launch: Callable[[], Path]) -> Path:
    """What ``launch`` (a runner's run) returns; its failures as the command's one line and exit code."""
    try:
        return launch()
    except PipelineImageMissing as exc:
        raise click.ClickException(str(exc)) from None
    except dataroot.UnsafeDataRoot as exc:
        click.echo(f"clusterflow: {exc}", err=True)
        sys.exit(2)
    except PipelineFailed as exc:
        click.echo(f"clusterflow: {exc}", err=True)
        sys.exit(exc.exit_code)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"),
              show_default=True, help="Host directory mounted at /data: the one the model run was run in.")
@click.option("--model-run", required=True, help="Run id of a finished run: its best variant's model scores the "
                                                 "data, and the output goes to runs/<run>/assign/.")
@click.option(OPTIONS["dataset"].flag, "dataset", required=True,
              help="The data to score: digits, synthetic, or a .csv/.npy/.npz file (mounted read-only).")
@click.option(OPTIONS["allow_failed_gate"].flag, "allow_failed_gate", is_flag=True,
              help=OPTIONS["allow_failed_gate"].help)
@click.option("--image-tag", default=VERSION, show_default=True, help="Tag of the clusterflow/assign image.")
@click.option("--digests", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Digests file of a publish: run its assign image by digest (overrides ${pinning.DIGESTS_ENV}).")
def assign(data_dir: Path, model_run: str, dataset: str, allow_failed_gate: bool, image_tag: str,
           digests: Path | None) -> None:
    """Assign each row of a dataset to a cluster of a finished run's best model, as a container."""
    try:
        run_id = RunId(model_run)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not RunLayout(data_dir, run_id).run_dir.is_dir():
        click.echo(f"clusterflow: no run {run_id} in {data_dir}: give the --model-run of a finished run "
                   "(and its --data-dir)", err=True)
        sys.exit(2)
    if dataset not in spec.BUILTIN_DATASETS and not Path(dataset).is_file():  # nothing to mount
        click.echo(f"clusterflow: dataset {dataset!r} is neither {' nor '.join(spec.BUILTIN_DATASETS)} nor an "
                   "existing file: check the path", err=True)
        sys.exit(2)
    try:
        limits = spec.step_limits()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    client, images = _engine((ASSIGN,), image_tag, digests)
    runner = LocalRunner(client, data_dir, limits=limits)
    summary = _launched(lambda: runner.assign(run_id, dataset, images, allow_failed_gate=allow_failed_gate))
    click.echo(f"assigned: {summary}")


main.add_command(reproduce_command, "reproduce")
