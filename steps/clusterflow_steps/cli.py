"""What every step's click shell shares: the run options, the options of the parameter table and
env-var settings."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.contract import ENV_PREFIX, NO_CACHE_ENV, ContractError, RunLayout
from clusterflow_steps.launch import DATA_MOUNT
from clusterflow_steps.params import COMMIT_CACHE_FLAG, DATA_ROOT_FLAG, OPTIONS, RUN_ID_FLAG, Option, of_step

_COMMIT_META = "clusterflow.commit_cache"


class StepCommand(click.Command):
    """A command whose usage errors (bad option values) print one line, like every other user error."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # without its context: "Error: <problem>" only, no usage banner
            raise click.UsageError(f"{exc.format_message().rstrip()} (see {info_name or self.name} --help)") from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ContractError as exc:  # a run id, variant or artifact that breaks the contract
            raise UserError(str(exc)) from None


def step_command(help_text: str) -> Callable[[Callable[..., Any]], click.Command]:
    """Declare a step's top-level command; every option is settable as ``CLUSTERFLOW_<OPTION>``."""
    return click.command(cls=StepCommand, help=help_text, context_settings={
        "auto_envvar_prefix": ENV_PREFIX, "show_default": True, "help_option_names": ["-h", "--help"]})


def click_option(option: Option, **override: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``option`` as a click option settable as its env var; ``override``: click keywords the step
    computes itself (a default that depends on the container)."""
    kind: Any = option.kind
    if option.choices:
        kind = click.Choice(option.choices)
    elif option.minimum is not None:
        kind = click.IntRange(min=option.minimum)
    decls = [f"{option.flag}/{option.no_flag}" if option.kind is bool else option.flag]
    settings: dict[str, Any] = {"default": option.default, "help": option.help, "envvar": option.envvar,
                                "show_envvar": True}
    if option.kind is not bool:
        settings["type"] = kind
    if option.show_default:
        settings["show_default"] = option.show_default
    return click.option(*decls, option.name, **{**settings, **override})


def step_options(step: str, **overrides: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add every option of ``step`` from :mod:`clusterflow_steps.params` (``overrides``: option name ->
    click keywords, see :func:`click_option`)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(of_step(step)):
            command = click_option(option, **overrides.get(option.name, {}))(command)
        return command

    return decorate


def _cache_setting(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``--cache/--no-cache`` (or ``CLUSTERFLOW_CACHE``) wins; else ``CLUSTERFLOW_NO_CACHE=1`` turns it off."""
    if ctx.get_parameter_source(param.name or "") == click.core.ParameterSource.DEFAULT:
        return os.environ.get(NO_CACHE_ENV, "").strip().lower() in ("", "0", "false", "no", "off")
    return value


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--run-id``, ``--data-root``, ``--cache/--no-cache`` and ``--commit-cache``; the command
    receives a validated ``layout`` and ``use_cache`` (``--commit-cache`` is for
    :func:`clusterflow_steps.cache.run_step`, see :func:`commit_requested`)."""

    @click.option(RUN_ID_FLAG, "run_id", required=True, show_envvar=True,
                  help="Run id: 1-128 letters, digits and '._-'.")
    @click.option(DATA_ROOT_FLAG, "data_root", type=click.Path(file_okay=False, path_type=Path),
                  default=Path(DATA_MOUNT), show_envvar=True,
                  help="Data root holding runs/<run_id>/ (mounted at /data in containers).")
    @click_option(OPTIONS["cache"], callback=_cache_setting)
    @click.option(COMMIT_CACHE_FLAG, "commit_cache", is_flag=True, allow_from_autoenv=False,
                  help="Run nothing: put the outputs this same command already wrote to runs/<run_id>/ "
                       "into <data root>/cache/, read-only (with --no-cache replacing an entry). The "
                       "orchestrators run it after each step, in a container that alone can write the "
                       "cache. Refuses (exit 2, nothing stored) unless the step's manifest has exactly "
                       "this command's cache key and params and its files match their sha256.")
    @functools.wraps(command)
    def with_layout(run_id: str, data_root: Path, cache: bool, commit_cache: bool, **kwargs: Any) -> Any:
        click.get_current_context().meta[_COMMIT_META] = commit_cache
        return command(layout=RunLayout(data_root, run_id), use_cache=cache, **kwargs)

    return with_layout


def commit_requested() -> bool:
    """Whether the running step command was given ``--commit-cache``: every step's CLI reaches
    ``run_step`` with its params and inputs, which is where the commit happens, so no step's
    shell needs to know about it."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(_COMMIT_META))
