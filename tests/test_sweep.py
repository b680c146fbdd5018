"""Choosing k (issue 15, item 2): --k fans the cluster step out to one task per variant and k, in
both renderings; bad sweeps are refused with one line (no Docker, no Airflow)."""

from __future__ import annotations

import json
import os

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


# --- --sweep: a list of variant specs, each an algorithm with its options (and k) ------------------------
SWEEP = ({"algorithm": "kmeans", "k": "2..3", "inits": ["k-means++"]}, {"algorithm": "dbscan", "min_samples": 10},
         {"algorithm": "agglomerative", "k": "2,4", "linkage": "average"})


def test_each_sweep_entry_renders_its_own_cluster_commands():
    tasks = _cluster_tasks(spec.PipelineParams(sweep=SWEEP))
    assert [t.variant for t in tasks] == ["kmeans-k-means++-k2", "kmeans-k-means++-k3", "dbscan",
                                          "agglomerative-k2", "agglomerative-k4"]
    expected = {"kmeans-k-means++-k3": ("kmeans", 3, None, None), "dbscan": ("dbscan", None, 10, None),
                "agglomerative-k4": ("agglomerative", 4, None, "average")}
    for task in tasks:
        with COMMANDS["cluster"].make_context("cluster", list(task.command)) as ctx:
            parsed = ctx.params
        assert parsed["variant"] == task.variant
        if task.variant in expected:
            assert (parsed["algorithm"], parsed["n_clusters"], parsed["min_samples"], parsed["linkage"]) \
                == expected[task.variant]


def test_an_entry_takes_the_runs_options_it_does_not_set():
    params = spec.PipelineParams(n_init=2, sweep=({"algorithm": "gaussian-mixture", "k": "3,4"},
                                                  {"algorithm": "kmeans", "k": "5", "inits": ["random"], "n_init": 7}))
    commands = {t.variant: t.command for t in _cluster_tasks(params)}
    assert commands["gaussian-mixture-k3"][commands["gaussian-mixture-k3"].index("--n-init") + 1] == "2"
    assert commands["kmeans-random-k5"][commands["kmeans-random-k5"].index("--n-init") + 1] == "7"


@pytest.mark.parametrize("sweep, message", [
    (({"algorithm": "dbscan", "k": "2..3"},), r"sweep entry 1 \(dbscan\): dbscan does not take --k"),
    (({"algorithm": "kmeans"}, {"algorithm": "kmeans"}), "entries 1 and 2 both make variant k-means++"),
    (({"eps": 1.0},), "sweep entry 1: give an object with an algorithm"),
    (({"algorithm": "birch", "bogus": 1},), "unknown option 'bogus'"),
    (({"algorithm": "louvain"},), "unknown algorithm 'louvain'"),
    (({"algorithm": "dbscan", "eps": 0},), "use a distance above 0"),
    (({"algorithm": "birch", "k": "9..3"},), "inverted"),
    (({"algorithm": "birch", "k": "2..40"}, {"algorithm": "agglomerative", "k": "2..40"}), "78 cluster tasks"),
])
def test_bad_sweep_entries_are_refused_with_one_line(sweep, message):
    with pytest.raises(ValueError, match=message):
        spec.PipelineParams(sweep=sweep)


@pytest.mark.parametrize("value", [
    [{"k": "2..5"}], [{"algorithm": "spectral"}], [{"algorithm": "kmeans", "k": "2-5"}],
    [{"algorithm": "kmeans", "inits": ["bogus"]}], [{"algorithm": "birch", "bogus": 1}], "kmeans",
    [{"algorithm": "birch", "n_clusters": 1}],
    # a param the entry's algorithm does not take, and eps <= 0 (the README's list of what dbscan takes)
    [{"algorithm": "kmeans", "eps": 0.5}], [{"algorithm": "dbscan", "k": "2..5"}],
    [{"algorithm": "dbscan", "n_clusters": 3}], [{"algorithm": "birch", "linkage": "ward"}],
    [{"algorithm": "hdbscan", "metric": "cosine"}], [{"algorithm": "dbscan", "eps": 0}],
    [{"algorithm": "dbscan", "eps": -0.5}],
])
def test_the_airflow_param_schema_refuses_bad_sweeps_at_trigger_time(value):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, spec.param_schema("sweep"))


@pytest.mark.parametrize("value", [
    [{"algorithm": "dbscan", "eps": 0.4, "min_samples": 10, "metric": "cosine"}],
    [{"algorithm": "hdbscan", "min_cluster_size": 20, "min_samples": 5}],
    [{"algorithm": "gaussian-mixture", "k": "2..4", "covariance_type": "diag", "n_init": 2}],
    [{"algorithm": "agglomerative", "n_clusters": 10, "linkage": "average"}],
    [{"algorithm": "kmeans", "k": "2..15", "inits": ["pca"], "n_init": 1, "minibatch": True}],
])
def test_the_airflow_param_schema_takes_each_algorithms_own_options(value):
    jsonschema.validate(value, spec.param_schema("sweep"))
    spec.PipelineParams(sweep=tuple(value))  # and so do the run's params


@pytest.mark.parametrize("eps", [0, -1.0])
def test_eps_at_or_below_zero_fails_the_airflow_param_schema(eps):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(eps, spec.param_schema("eps"))
    jsonschema.validate(0.3, spec.param_schema("eps"))


def test_the_airflow_param_schema_takes_a_sweep_and_the_plan_renders_it():
    jsonschema.validate([dict(entry) for entry in SWEEP], spec.param_schema("sweep"))
    rendered = plan.render_plan({"sweep": [dict(entry) for entry in SWEEP]}, "manual__1", "/data",
                                pinning.local("0.1.0"), spec.StepLimits(1 << 30, 1.0))
    assert rendered.variants == list(spec.PipelineParams(sweep=SWEEP).variants)
    again = plan.Plan.from_xcom(rendered.to_xcom())
    assert again.params == rendered.params and again.tasks == rendered.tasks


def test_clusterflow_run_takes_a_sweep_inline_or_from_a_file(monkeypatch, tmp_path):
    seen = {}

    class FakeRunner:
        def __init__(self, client, data_dir, limits=None, jobs=None):
            pass

        def run(self, run_id, params, images):
            seen["params"] = params
            return tmp_path / "report.html"

    class FakeClient:
        api = None

        def ping(self):
            return True

    for name in [n for n in os.environ if n.startswith("CLUSTERFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "LocalRunner", FakeRunner)
    monkeypatch.setattr(cli.docker, "from_env", FakeClient)
    text = json.dumps(list(SWEEP))
    result = CliRunner().invoke(cli.main, ["run", "--run-id", "r1", "--sweep", text], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["params"] == spec.PipelineParams(sweep=SWEEP)
    path = tmp_path / "sweep.json"
    path.write_text(text)
    result = CliRunner().invoke(cli.main, ["run", "--run-id", "r2", "--sweep", str(path)], catch_exceptions=False)
    assert result.exit_code == 0 and seen["params"] == spec.PipelineParams(sweep=SWEEP)


@pytest.mark.parametrize("value, message", [
    ("[1, 2]", "give a JSON list of objects"), ("[{", "not JSON"), ("/nonexistent/sweep.json", "No such file"),
    ('[{"algorithm": "dbscan", "k": "2..4"}]', "dbscan does not take --k"),
])
def test_clusterflow_run_refuses_a_bad_sweep_with_exit_2(value, message):
    result = CliRunner().invoke(cli.main, ["run", "--sweep", value])
    assert result.exit_code == 2 and message in result.output
