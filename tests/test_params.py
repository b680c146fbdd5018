"""The one parameter table: every command the spec renders is one its step's own CLI parses into
the params, and each option has one default wherever it appears (no Docker, no Airflow)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest

from clusterflow import cli, spec
from clusterflow_steps import params as table
from tests.steps.conftest import COMMANDS


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CLUSTERFLOW_")]:
        monkeypatch.delenv(name)


def _user_dataset(tmp_path: Path) -> spec.PipelineParams:
    data = tmp_path / "points.csv"
    data.write_text("a,b,y\n1,2,0\n3,4,1\n")
    return spec.PipelineParams(dataset=str(data), label_column="y", n_clusters=2, inits=("random",))


CASES: dict[str, Any] = {
    "defaults": lambda tmp: spec.PipelineParams(),
    "synthetic with sizes": lambda tmp: spec.PipelineParams(dataset="synthetic", n_samples=500, n_features=3,
                                                            n_centers=4, seed=7),
    "n_clusters": lambda tmp: spec.PipelineParams(n_clusters=8, n_init=2, inits=("pca", "random")),
    "every gate threshold": lambda tmp: spec.PipelineParams(min_ari=0.5, min_ami=0.25, min_v_measure=0.125,
                                                            min_silhouette=-0.5, max_inertia=70000.0),
    "minibatch": lambda tmp: spec.PipelineParams(minibatch=True),
    "no cache": lambda tmp: spec.PipelineParams(cache=False),
    "a user dataset file": _user_dataset,
}


def _parsed(task: spec.Task) -> dict[str, Any]:
    """What the step's own click command makes of the task's command line (nothing is run)."""
    with COMMANDS[task.step].make_context(task.step, list(task.command)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("case", list(CASES))
def test_every_rendered_command_parses_into_the_params(case: str, tmp_path: Path) -> None:
    params = CASES[case](tmp_path)
    for task in (t for stage in spec.stages("r1", params, spec.local_images("0.1.0")) for t in stage):
        parsed = _parsed(task)
        assert parsed["run_id"] == "r1" and parsed["cache"] is params.cache, task.name
        for option in table.of_step(task.step):
            if not option.pipeline or (option.when and not option.when(params)):
                continue
            expected = getattr(params, option.name)
            if option.name == "dataset":
                expected = spec.dataset_in_container(expected)
            assert parsed[option.name] == expected, (task.name, option.name)
        if task.step == "cluster":
            assert parsed["init"] == parsed["variant"] == task.variant
    assert [t.variant for t in spec.stages("r1", params, spec.local_images("0.1.0"))[1]] == list(params.inits)


def _click_params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params if p.name}


def test_each_option_has_one_default_everywhere() -> None:
    defaults = spec.PipelineParams().as_dict()
    local = _click_params(cli.run)
    for name, option in table.PIPELINE.items():
        assert getattr(spec.PipelineParams(), name) == option.default == spec.FIELDS[name].default, name
        jsonschema.validate(defaults[name], spec.param_schema(name))  # the Airflow Param's default
        assert spec.param_schema(name)["description"] == option.help == spec.FIELDS[name].metadata["help"]
        assert local[name].default == option.default, name
    for step, command in COMMANDS.items():
        found = _click_params(command)
        for option in table.of_step(step):
            if option.default is not None:  # else the step computes it (prepare's limits)
                assert found[option.name].default == option.default, (step, option.name)
            assert found[option.name].envvar == option.envvar
        assert found["cache"].default is table.OPTIONS["cache"].default
    assert {o.name for o in table.STEP_ONLY}.isdisjoint(spec.FIELDS)


def test_the_gate_thresholds_are_evaluate_options_of_the_table() -> None:
    from clusterflow_steps.evaluate import gate

    evaluate = _click_params(COMMANDS["evaluate"])
    assert gate.OPTIONS == table.GATE and len(table.GATE) == 5
    for flag in table.GATE:
        assert flag in evaluate[gate.option_key(flag)].opts and spec.FIELDS[gate.option_key(flag)].default is None
