"""The pipeline spec: one definition of steps, commands, mounts and params."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from click.testing import CliRunner

from clusterflow_steps.contract import RunId

from clusterflow import cli, spec


def test_stages_run_the_four_steps_in_order_with_one_cluster_task_per_init():
    stages = spec.stages("demo", spec.PipelineParams(), spec.local_images("1.2.3"))
    assert [[t.name for t in stage] for stage in stages] == [
        ["prepare"], ["cluster[k-means++]", "cluster[random]", "cluster[pca]"], ["evaluate"], ["report"]]
    assert [t.image for t in stages[1]] == ["clusterflow/cluster:1.2.3"] * 3
    assert [t.role.runs_after_gate_failure for stage in stages for t in stage] == [False] * 5 + [True]


def test_commands_carry_the_demo_defaults():
    params = spec.PipelineParams()
    assert spec.command("prepare", "r1", params) == (
        "--run-id", "r1", "--dataset", "digits", "--seed", "0", "--cache")
    assert spec.command("cluster", "r1", params, "pca") == (
        "--run-id", "r1", "--n-init", "4", "--seed", "0", "--no-minibatch", "--cache",
        "--init", "pca", "--variant", "pca")
    assert spec.command("evaluate", "r1", params) == ("--run-id", "r1", "--seed", "0", "--cache")
    assert spec.command("report", "r1", params) == ("--run-id", "r1", "--cache")
    assert spec.command("report", "r1", spec.PipelineParams(cache=False))[-1] == "--no-cache"


def test_optional_params_reach_only_their_step():
    params = spec.PipelineParams(dataset="synthetic", n_samples=500, n_clusters=7, min_ari=0.5, minibatch=True)
    assert spec.command("prepare", "r", params)[2:] == (
        "--dataset", "synthetic", "--n-samples", "500", "--n-features", "64", "--n-centers", "10", "--seed", "0",
        "--cache")
    cluster = spec.command("cluster", "r", params, "random")
    assert ("--n-clusters", "7") == cluster[cluster.index("--n-clusters"):][:2] and "--minibatch" in cluster
    assert "--min-ari" not in cluster
    assert spec.command("evaluate", "r", params)[2:] == ("--seed", "0", "--min-ari", "0.5", "--cache")


def test_a_user_dataset_is_mounted_read_only_under_input(tmp_path):
    data = tmp_path / "points.csv"
    data.write_text("a,b\n1,2\n")
    params = spec.PipelineParams(dataset=str(data))
    assert spec.command("prepare", "r", params)[3] == "/input/points.csv"
    assert spec.mounts("/srv/data", params.dataset, cache="/srv/data/cache") == [
        spec.Mount("/srv/data", "/data"), spec.Mount("/srv/data/cache", "/data/cache", read_only=True),
        spec.Mount(str(data), "/input/points.csv", read_only=True)]
    assert spec.mounts("clusterflow-data")[0].kind == "volume"
    assert spec.mounts("/srv/data")[0].kind == "bind"


def test_steps_see_the_cache_store_read_only_and_only_a_commit_can_write_it(monkeypatch):
    monkeypatch.delenv(spec.CACHE_SOURCE_ENV, raising=False)
    assert spec.mounts("/srv/data") == [spec.Mount("/srv/data", "/data"),
                                        spec.Mount("/srv/data/cache", "/data/cache", read_only=True)]
    assert spec.mounts("/srv/data", commit=True) == [spec.Mount("/srv/data", "/data", read_only=True),
                                                     spec.Mount("/srv/data/cache", "/data/cache")]
    assert [m.source for m in spec.mounts("clusterflow-data")] == ["clusterflow-data", "clusterflow-data-cache"]
    monkeypatch.setenv(spec.CACHE_SOURCE_ENV, "/var/cache/clusterflow")
    assert spec.mounts("/srv/data")[1] == spec.Mount("/var/cache/clusterflow", "/data/cache", read_only=True)


def test_every_task_but_the_report_has_a_commit_the_step_cli_accepts(tmp_path):
    """The commit is the step's own command plus the flag the step CLIs define (checked by running
    each commit command against an empty run: each refuses for want of outputs, not of the flag)."""
    from click.testing import CliRunner

    from tests.steps.conftest import COMMANDS

    tasks = [t for stage in spec.stages("r", spec.PipelineParams(), spec.local_images("t")) for t in stage]
    assert [t.name for t in tasks if not t.role.commits_cache] == ["report"]
    for task in tasks:
        commit = task.commit()
        assert commit.is_commit and not task.is_commit
        assert commit.command == (*task.command, spec.COMMIT_CACHE_FLAG)
        assert spec.container_name("r", commit) == spec.container_name("r", task) + ".commit"
        if task.step == "prepare":  # reads no upstream file before committing
            args = [a.replace(spec.DATA_MOUNT, str(tmp_path)) for a in commit.command]
            result = CliRunner().invoke(COMMANDS[task.step], args, env={"CLUSTERFLOW_IMAGE_DIGEST": "sha256:0"})
            assert result.exit_code == 2 and "not caching" in result.stderr, result.stderr


@pytest.mark.parametrize("run_id", ["", "a/b", "..", "../x", ".hidden", "a b", "x" * 129, "a..b"])
def test_unsafe_run_ids_are_refused(run_id):
    with pytest.raises(ValueError, match="invalid run id"):
        spec.stages(RunId(run_id), spec.PipelineParams(), spec.local_images("t"))


@pytest.mark.parametrize("change, message", [
    ({"inits": ()}, "give one or more"), ({"inits": ("random", "random")}, "distinct"),
    ({"inits": ("kmeans",)}, "unknown init"), ({"n_clusters": 1}, "n_clusters 1"),
    ({"n_init": 0}, "n_init 0"), ({"seed": -1}, "seed -1"),
])
def test_invalid_params_are_refused_with_one_line(change, message):
    with pytest.raises(ValueError, match=message):
        spec.PipelineParams(**change)


def test_container_policy_isolates_steps():
    assert spec.CONTAINER_POLICY["network_mode"] == "none"
    assert spec.CONTAINER_POLICY["read_only"] is True
    assert spec.CONTAINER_POLICY["cap_drop"] == ["ALL"]
    assert "/tmp" in spec.CONTAINER_POLICY["tmpfs"]


def test_the_run_command_offers_every_pipeline_param(monkeypatch):
    seen = {}

    class FakeRunner:
        def __init__(self, client, data_dir, limits=None, jobs=None):
            seen["data_dir"], seen["limits"], seen["jobs"] = data_dir, limits, jobs

        def run(self, run_id, params, images):
            seen.update(run_id=run_id, params=params, images=images)
            return seen["data_dir"] / "report.html"

    class FakeClient:
        api = None

        def ping(self):
            return True

    for name in ("CLUSTERFLOW_DIGESTS", "CLUSTERFLOW_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "LocalRunner", FakeRunner)
    monkeypatch.setattr(cli.docker, "from_env", FakeClient)
    runner = CliRunner()
    help_text = runner.invoke(cli.main, ["run", "--help"]).output
    for f in dataclasses.fields(spec.PipelineParams):
        assert ("--init" if f.name == "inits" else "--" + f.name.replace("_", "-")) in help_text
    result = runner.invoke(cli.main, ["run", "--run-id", "r1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["params"] == spec.PipelineParams() and seen["run_id"] == "r1" and seen["jobs"] is None
    assert dict(seen["images"].refs) == {step: f"clusterflow/{step}:{cli.VERSION}" for step in spec.STEPS}
    result = runner.invoke(cli.main, ["run", "--run-id", "r2", "--init", "random", "--n-clusters", "8", "--jobs", "1"])
    assert seen["params"] == spec.PipelineParams(inits=("random",), n_clusters=8) and seen["jobs"] == 1


@pytest.mark.parametrize("args, message", [
    (["--run-id", "../etc"], "invalid run id"), (["--n-clusters", "1"], "n_clusters 1"),
    (["--init", "bogus"], "bogus"),
])
def test_the_run_command_refuses_bad_input_with_exit_2(args, message):
    result = CliRunner().invoke(cli.main, ["run", *args])
    assert result.exit_code == 2 and message in result.output


def test_step_limits_default_and_from_the_environment():
    cores = min(2.0, float(os.cpu_count() or 1))
    assert spec.step_limits({}) == spec.StepLimits(2 << 30, cores)
    limits = spec.step_limits({spec.STEP_MEMORY_ENV: "512m", spec.STEP_CPUS_ENV: "1.5"})
    assert limits.docker_kwargs() == {"mem_limit": 512 << 20, "nano_cpus": 1_500_000_000}
    assert spec.step_limits({spec.STEP_MEMORY_ENV: "1G", spec.STEP_CPUS_ENV: " 0.5 "}).memory == 1 << 30
    assert spec.step_limits({spec.STEP_MEMORY_ENV: str(64 << 20)}).memory == 64 << 20


@pytest.mark.parametrize(("name", "value"), [
    (spec.STEP_MEMORY_ENV, "lots"), (spec.STEP_MEMORY_ENV, "1m"), (spec.STEP_MEMORY_ENV, "-2g"),
    (spec.STEP_CPUS_ENV, "0"), (spec.STEP_CPUS_ENV, "two"), (spec.STEP_CPUS_ENV, "nan"), (spec.STEP_CPUS_ENV, "inf"),
])
def test_unusable_step_limits_name_the_setting(name, value):
    with pytest.raises(ValueError, match=f"^{name}={value!r}: give "):
        spec.step_limits({name: value})


def test_each_task_of_a_run_has_its_own_valid_container_name():
    run_id = spec.safe_run_id("manual__2026-11-24T10:00:00+00:00")
    tasks = [t for stage in spec.stages(run_id, spec.PipelineParams(), spec.local_images("1")) for t in stage]
    names = [spec.container_name(run_id, t) for t in tasks]
    assert len(set(names)) == len(tasks) == 6
    assert all(re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", n) for n in names), names  # Docker's rule
    assert spec.container_name("other", tasks[0]) != names[0]
