"""What every step's click shell shares: the run options and env-var settings."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from clusterflow_steps.contract import RunLayout

ENV_PREFIX = "CLUSTERFLOW"


class StepCommand(click.Command):
    """A command whose usage errors (bad option values) print one line, like every other user error."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            exc.message = f"{exc.message.rstrip()} (see {info_name or self.name} --help)"
            exc.ctx = None  # no usage banner: "Error: <problem>" only
            raise


def step_command(help_text: str) -> Callable[[Callable[..., Any]], click.Command]:
    """Declare a step's top-level command; every option is settable as ``CLUSTERFLOW_<OPTION>``."""
    return click.command(cls=StepCommand, help=help_text, context_settings={
        "auto_envvar_prefix": ENV_PREFIX, "show_default": True, "help_option_names": ["-h", "--help"]})


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--run-id`` and ``--data-root``; the command receives a validated ``layout``."""

    @click.option("--run-id", required=True, show_envvar=True,
                  help="Run id: 1-128 letters, digits and '._-'.")
    @click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
                  default=Path("/data"), show_envvar=True,
                  help="Data root holding runs/<run_id>/ (mounted at /data in containers).")
    @functools.wraps(command)
    def with_layout(run_id: str, data_root: Path, **kwargs: Any) -> Any:
        return command(layout=RunLayout(data_root, run_id), **kwargs)

    return with_layout
