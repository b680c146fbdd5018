"""Choosing k (issue 15, item 2): --k fans the cluster step out to one task per variant and k, in
both renderings; bad sweeps are refused with one line (no Docker, no Airflow)."""

from __future__ import annotations

import jsonschema
import pytest
from click.testing import CliRunner

from clusterflow import cli, plan, pinning, spec
from clusterflow_steps import params as table
from tests.steps.conftest import COMMANDS


def _cluster_tasks(params: spec.PipelineParams) -> list[spec.Task]:
    return spec.stages("r1", params, spec.local_images("0.1.0"))[1]


@pytest.mark.parametrize("text, ks", [("2..5", (2, 3, 4, 5)), ("2,5,10", (2, 5, 10)), ("7", (7,)),
                                      ("2..4,10", (2, 3, 4, 10)), ("2..15", tuple(range(2, 16)))])
def test_k_is_a_range_and_or_a_list(text, ks):
    assert table.parse_k(text) == ks
    jsonschema.validate(text, spec.param_schema("k"))


@pytest.mark.parametrize("text, message", [
    ("", "give a range"), ("2..", "give a range"), ("a..b", "give a range"), ("2-5", "give a range"),
    ("5..2", "inverted or empty"), ("1..4", "start the range at 2"), ("2..4,3", "given twice"),
])
def test_bad_k_is_refused_with_one_line(text, message):
    with pytest.raises(ValueError, match=message):
        spec.PipelineParams(k=text)


@pytest.mark.parametrize("text", ["", "2..", "a..b", "2-5", " 2..5"])
def test_a_malformed_k_fails_the_airflow_param_schema_at_trigger_time(text):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(text, spec.param_schema("k"))
    jsonschema.validate(None, spec.param_schema("k"))  # the default: no sweep


def test_one_cluster_task_per_init_and_k_each_with_its_n_clusters():
    params = spec.PipelineParams(k="2..4", inits=("k-means++", "random"))
    tasks = _cluster_tasks(params)
    assert [t.variant for t in tasks] == [f"kmeans-{i}-k{k}" for i in ("k-means++", "random") for k in (2, 3, 4)]
    assert params.variants == tuple(t.variant for t in tasks)
    for task in tasks:
        with COMMANDS["cluster"].make_context("cluster", list(task.command)) as ctx:
            parsed = ctx.params
        init, k = task.variant.removeprefix("kmeans-").rsplit("-k", 1)
        assert (parsed["init"], parsed["n_clusters"], parsed["variant"]) == (init, int(k), task.variant)
        assert parsed["algorithm"] == table.DEFAULT_ALGORITHM


def test_other_algorithms_sweep_k_under_their_own_name():
    tasks = _cluster_tasks(spec.PipelineParams(algorithm="agglomerative", k="3,5", linkage="average"))
    assert [t.variant for t in tasks] == ["agglomerative-k3", "agglomerative-k5"]
    assert "--init" not in tasks[0].command and ("--linkage", "average") == tuple(
        tasks[0].command[tasks[0].command.index("--linkage"):][:2])
    assert [t.variant for t in _cluster_tasks(spec.PipelineParams(minibatch=True, k="2,3", inits=("random",)))] \
        == ["minibatch-kmeans-random-k2", "minibatch-kmeans-random-k3"]


def test_without_k_the_default_run_renders_the_commands_it_always_did():
    tasks = _cluster_tasks(spec.PipelineParams())
    assert [t.command[-4:] for t in tasks] == [("--init", i, "--variant", i) for i in table.INITS]
    assert [t.variant for t in tasks] == list(table.INITS)
    assert not any("--n-clusters" in t.command for t in tasks)


@pytest.mark.parametrize("change, message", [
    ({"algorithm": "dbscan"}, "dbscan does not take --k"),
    ({"n_clusters": 5}, "give one of them"),
    ({"k": "2..30"}, "87 cluster tasks, more than 64"),
])
def test_sweeps_that_do_not_fit_are_refused_with_one_line(change, message):
    with pytest.raises(ValueError, match=message):
        spec.PipelineParams(**{"k": "2..5", **change})


def test_the_cap_counts_variants_times_k():
    assert len(spec.PipelineParams(k="2..22").variants) == 63  # 3 inits x 21 k
    spec.PipelineParams(k="2..65", inits=("pca",))  # 64: at the cap
    with pytest.raises(ValueError, match="65 cluster tasks"):
        spec.PipelineParams(k="2..66", inits=("pca",))


def test_the_dag_plan_maps_the_cluster_task_over_every_variant_and_k():
    images = pinning.local("0.1.0")
    rendered = plan.render_plan({"k": "2..6", "inits": ["k-means++"]}, "manual__1", "/data", images,
                                spec.StepLimits(1 << 30, 1.0))
    assert rendered.variants == [f"kmeans-k-means++-k{k}" for k in range(2, 7)]
    again = plan.Plan.from_xcom(rendered.to_xcom())
    assert again.task("cluster", "kmeans-k-means++-k4").command == rendered.task("cluster",
                                                                                 "kmeans-k-means++-k4").command
    assert "4" == again.task("cluster", "kmeans-k-means++-k4").command[
        list(again.task("cluster", "kmeans-k-means++-k4").command).index("--n-clusters") + 1]
    with pytest.raises(ValueError, match="inverted"):
        plan.render_plan({"k": "6..2"}, "manual__1", "/data", images, spec.StepLimits(1 << 30, 1.0))


@pytest.mark.parametrize("args, message", [(["--k", "9..3"], "inverted"), (["--k", "2..99"], "more than 64"),
                                           (["--k", "2..5", "--algorithm", "hdbscan"], "hdbscan does not take --k")])
def test_clusterflow_run_refuses_bad_sweeps_with_exit_2(args, message):
    result = CliRunner().invoke(cli.main, ["run", *args])
    assert result.exit_code == 2 and message in result.output
