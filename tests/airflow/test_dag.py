"""The digits_kmeans DAG as Airflow's DagBag loads it: structure, policy, Params and rendering.

The DagBag is loaded in the Airflow venv (dag_probe.py); what it holds is compared here with the
pipeline spec, so the DAG can never drift from the steps, flags and mounts the spec defines.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from clusterflow import lineage, spec
from clusterflow.version import VERSION
from tests.airflow.conftest import DAG_ID

AIRFLOW_RUN_ID = "manual__2026-11-24T10:00:00+00:00"
RENDER_CASES = [
    {"params": {}, "run_id": AIRFLOW_RUN_ID, "data_source": "clusterflow-data", "tag": VERSION,
     "digest": "sha256:" + "a" * 64},
    {"params": {"dataset": "synthetic", "n_samples": 500, "n_clusters": 8, "inits": ["pca", "random"],
                "n_init": 2, "seed": 7, "minibatch": True, "min_ari": 0.5, "max_inertia": 1e6},
     "run_id": "scheduled__2026-11-24T22:00:00+00:00", "data_source": "/srv/clusterflow", "tag": "9.9.9",
     "try_number": 3, "digest": None},
    {"params": {"dataset": "/srv/points/points.csv", "label_column": "label", "inits": ["k-means++"]},
     "run_id": "nightly-1", "data_source": "/srv/clusterflow", "tag": VERSION, "digest": "sha256:" + "b" * 64},
    {"params": {"k": "2..4", "inits": ["random"]}, "run_id": "sweep-1", "data_source": "clusterflow-data",
     "tag": VERSION, "digest": None},  # choosing k: one mapped cluster task per k
    {"params": {"sweep": [{"algorithm": "kmeans", "k": "2,3", "inits": ["pca"]},
                          {"algorithm": "dbscan", "min_samples": 10}]},
     "run_id": "sweep-2", "data_source": "clusterflow-data", "tag": VERSION, "digest": None},
]


REGISTRY = "127.0.0.1:5000"
PUBLISHED = {name: "sha256:" + f"{i:x}" * 64 for i, name in enumerate(("core", "base", *spec.IMAGES), start=1)}


def digests_file(path, registry=REGISTRY):
    """A publish's digests file, written by hand (the format's own statement, not the code's)."""
    path.write_text(json.dumps({"registry": registry, "version": VERSION, "commit": "c" * 40, "images": {
        name: f"{registry}/clusterflow/{name}@{digest}" for name, digest in PUBLISHED.items()}}))
    return path


@pytest.fixture(scope="module")
def pinned_case(tmp_path_factory):
    path = digests_file(tmp_path_factory.mktemp("pins") / "digests.json")
    return {"params": {"inits": ["random", "pca"]}, "run_id": AIRFLOW_RUN_ID, "data_source": "clusterflow-data",
            "tag": "9.9.9", "try_number": 2, "digest": None, "env": {"CLUSTERFLOW_DIGESTS": str(path)}}


@pytest.fixture(scope="module")
def seen(probe, pinned_case):
    return probe(render=[*RENDER_CASES, pinned_case], conf=INVALID_CONFS + VALID_CONFS)


def expected_images(case):
    if "env" in case:
        return {step: f"{REGISTRY}/clusterflow/{step}@{PUBLISHED[step]}" for step in spec.STEPS}
    return {step: f"clusterflow/{step}:{case['tag']}" for step in spec.STEPS}


def test_the_dag_folder_imports_without_errors(seen):
    assert seen["import_errors"] == {}
    assert seen["dag_ids"] == [DAG_ID, lineage.ASSIGN_DAG_ID]  # the training DAG and its scoring DAG
    assert seen["dag"]["fileloc"].endswith("orchestration/dags/digits_kmeans.py")


def test_tasks_and_their_dependencies(seen):
    tasks = seen["tasks"]
    assert set(tasks) == {"plan", "prepare", "cluster", "evaluate", "report", "outcome"}
    assert tasks["plan"]["upstream"] == []
    assert tasks["prepare"]["upstream"] == ["plan"]
    assert tasks["cluster"]["upstream"] == ["plan", "prepare"]  # plan: the variants it maps over
    assert tasks["cluster"]["mapped"] and tasks["cluster"]["expand"] == ["variant"]
    assert tasks["evaluate"]["upstream"] == ["cluster"]
    assert tasks["report"]["upstream"] == ["evaluate"]
    assert tasks["outcome"]["upstream"] == ["cluster", "evaluate", "prepare", "report"]
    assert tasks["outcome"]["downstream"] == []
    for step in spec.STEPS:
        assert tasks[step]["class"] == "StepOperator"


def test_trigger_rules_let_report_document_a_gate_failure_and_still_fail_the_run(seen):
    tasks = seen["tasks"]
    assert tasks["report"]["trigger_rule"] == "all_done"  # it skips itself unless evaluate scored
    assert tasks["outcome"]["trigger_rule"] == "one_failed"
    for task_id in ("plan", "prepare", "cluster", "evaluate"):
        assert tasks[task_id]["trigger_rule"] == "all_success"


def test_schedule_catchup_and_concurrency(seen):
    dag = seen["dag"]
    assert "expression='0 22 * * *'" in dag["schedule"] and dag["timetable"] == "CronTriggerTimetable"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 2
    assert dt.datetime.fromisoformat(dag["start_date"]) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert "Artifact contract" in dag["doc_md"]


def test_retries_and_timeouts(seen):
    tasks = seen["tasks"]
    assert tasks["prepare"]["execution_timeout"] == 300
    assert tasks["cluster"]["retries"] == 5 and tasks["cluster"]["retry_exponential_backoff"] is True
    for task_id in ("plan", "prepare", "cluster", "evaluate", "report", "outcome"):
        assert tasks[task_id]["execution_timeout"], task_id
    assert tasks["evaluate"]["retries"] == tasks["report"]["retries"] == tasks["prepare"]["retries"] == 2
    assert tasks["plan"]["retries"] == tasks["outcome"]["retries"] == 0  # deterministic: no point retrying
    steps = ("prepare", "cluster", "evaluate", "report")
    assert {t: tasks[t]["execution_timeout"] for t in steps} == {"prepare": 300, "cluster": 1200,
                                                                 "evaluate": 600, "report": 600}
    assert {t: tasks[t]["retry_delay"] for t in steps} == {"prepare": 30, "cluster": 10, "evaluate": 30,
                                                           "report": 30}


def test_drills_can_shorten_the_step_timeouts_and_retry_delays_through_the_env(probe):
    shortened = probe(env_extra={"CLUSTERFLOW_TASK_TIMEOUT_SECONDS": "3",
                                 "CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS": "1.5"})["tasks"]
    for task_id in ("prepare", "cluster", "evaluate", "report"):
        assert (shortened[task_id]["execution_timeout"], shortened[task_id]["retry_delay"]) == (3, 1.5), task_id
    assert shortened["plan"]["execution_timeout"] == shortened["outcome"]["execution_timeout"] == 60
    assert shortened["cluster"]["retries"] == 5  # only those two settings move
    broken = probe(env_extra={"CLUSTERFLOW_TASK_TIMEOUT_SECONDS": "soon"})
    assert "dag" not in broken
    assert "CLUSTERFLOW_TASK_TIMEOUT_SECONDS='soon': give a positive number of seconds" in "".join(
        broken["import_errors"].values())


def test_the_launcher_setting_picks_the_step_operator(probe):
    swarm = probe(env_extra={"CLUSTERFLOW_LAUNCHER": "swarm"})["tasks"]
    assert {swarm[t]["class"] for t in ("prepare", "cluster", "evaluate", "report")} == {"SwarmStepOperator"}
    broken = probe(env_extra={"CLUSTERFLOW_LAUNCHER": "kubernetes"})
    assert "dag" not in broken
    assert "CLUSTERFLOW_LAUNCHER='kubernetes': use docker or swarm" in "".join(broken["import_errors"].values())


def test_params_are_the_pipeline_params_with_their_defaults_and_help(seen):
    params = seen["params"]
    assert list(params) == list(spec.FIELDS)
    assert {name: p["default"] for name, p in params.items()} == spec.PipelineParams().as_dict()
    for name, p in params.items():
        assert p["description"] == spec.FIELDS[name].metadata["help"]
    assert params["inits"]["schema"]["items"]["enum"] == list(spec.INITS)
    assert params["n_clusters"]["schema"]["minimum"] == 2
    assert params["n_init"]["schema"]["minimum"] == 1
    assert params["minibatch"]["schema"]["type"] == "boolean"
    assert params["min_ari"]["schema"]["type"] == ["number", "null"]


INVALID_CONFS = [{"inits": ["k-means"]}, {"inits": []}, {"inits": ["pca", "pca"]}, {"n_clusters": 1},
                 {"n_init": 0}, {"seed": -1}, {"minibatch": "yes"}, {"min_ari": "high"}, {"dataset": ""},
                 {"k": "2-15"}, {"sweep": [{"algorithm": "spectral"}]}, {"sweep": [{"k": "2..5"}]},
                 {"sweep": [{"algorithm": "birch", "bogus": 1}]}]
VALID_CONFS = [{}, {"n_clusters": 8, "inits": ["random"]}, {"min_ari": 0.5, "max_inertia": 70000}, {"k": "2..15"},
               {"sweep": [{"algorithm": "kmeans", "k": "2..15"}, {"algorithm": "hdbscan", "min_cluster_size": 20}]}]


def test_the_params_schema_rejects_invalid_confs_before_any_task_runs(seen):
    results = seen["conf"]
    rejected, accepted = results[:len(INVALID_CONFS)], results[len(INVALID_CONFS):]
    for conf, error in zip(INVALID_CONFS, rejected, strict=True):
        assert error and error.startswith("ParamValidationError"), conf
    assert "is not one of ['k-means++', 'random', 'pca']" in rejected[0]
    assert accepted == [None] * len(VALID_CONFS)


def test_the_containers_are_what_the_spec_renders(seen, pinned_case):
    for case, rendered in zip([*RENDER_CASES, pinned_case], seen["render"], strict=True):
        params = spec.PipelineParams(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in case["params"].items()})
        run_id = spec.safe_run_id(case["run_id"])
        assert rendered["plan"]["run_id"] == run_id
        assert rendered["plan"]["variants"] == list(params.variants)
        mounts = spec.mounts(case["data_source"], params.dataset)
        expected_mounts = [{"Target": m.target, "Source": m.source, "Type": m.kind, "ReadOnly": m.read_only}
                           for m in mounts]
        tasks = [t for stage in spec.stages(run_id, params, expected_images(case)) for t in stage]
        assert list(rendered["containers"]) == [t.name for t in tasks]
        # the commit containers: the cache store writable, the data root not
        assert rendered["plan"]["commit_mounts"] == [
            {"source": m.source, "target": m.target, "read_only": m.read_only, "type": m.kind}
            for m in spec.mounts(case["data_source"], params.dataset, commit=True)]
        assert {n: t["commits_cache"] for n, t in rendered["plan"]["tasks"].items()} == {
            t.name: t.name != "report" for t in tasks}
        for t in tasks:
            container = rendered["containers"][t.name]
            assert container["image"] == t.image == expected_images(case)[t.step]
            assert container["command"] == list(t.command)
            assert container["labels"] == spec.labels(DAG_ID, run_id, t, case.get("try_number", 1))
            assert container["environment"] == spec.step_environment(t.image, case["digest"])
            assert container["mounts"] == expected_mounts
            assert container["container_name"] == spec.container_name(run_id, t)


def test_with_a_digests_file_the_plan_pins_every_step_image_by_digest_and_records_the_mode(seen):
    local, pinned = seen["render"][0]["plan"], seen["render"][-1]["plan"]
    assert local["images"] == {"mode": "local", "refs": {s: f"clusterflow/{s}:{VERSION}" for s in spec.STEPS}}
    assert pinned["images"]["mode"] == "digests"
    for name, task in pinned["tasks"].items():
        assert task["image"] == f"{REGISTRY}/clusterflow/{task['step']}@{PUBLISHED[task['step']]}", name
        assert ":" + VERSION not in task["image"] and ":9.9.9" not in task["image"]  # never the tag


def test_a_retry_renders_from_the_plan_it_finds_not_from_the_digests_file_now(probe, tmp_path):
    """The plan is the XCom every try reads: a publish between two tries changes nothing in this run."""
    path = digests_file(tmp_path / "digests.json")
    case = {"params": {}, "run_id": "r-retry", "data_source": "/srv/d", "tag": VERSION,
            "env": {"CLUSTERFLOW_DIGESTS": str(path)}}
    first = probe(render=[case])["render"][0]
    path.write_text(path.read_text().replace(PUBLISHED["cluster"], "sha256:" + "f" * 64))
    retried = probe(retry={"plan": first["plan"], "step": "cluster", "variant": "pca", "try_number": 3})
    assert retried["retry"]["image"] == first["containers"]["cluster[pca]"]["image"] == \
        f"{REGISTRY}/clusterflow/cluster@{PUBLISHED['cluster']}"
    # it records the manifest digest the ref pins (the same on every engine), not a local image ID
    assert retried["retry"]["environment"]["CLUSTERFLOW_IMAGE_DIGEST"] == PUBLISHED["cluster"]


@pytest.mark.parametrize("env, message", [
    ({"CLUSTERFLOW_REGISTRY": "http://127.0.0.1:5000"}, "without a scheme"),
    ({"CLUSTERFLOW_DIGESTS": "/nonexistent/digests.json"}, "digests file /nonexistent/digests.json: No such file"),
])
def test_the_plan_refuses_unusable_image_settings_in_one_line(probe, env, message):
    found = probe(render=[{"params": {}, "run_id": "r", "data_source": "/srv/d", "tag": VERSION, "env": env}])
    assert message in found["render_error"] and "\n" not in found["render_error"]


def test_a_user_dataset_is_mounted_read_only_under_input(seen):
    containers = seen["render"][2]["containers"]
    assert containers["prepare"]["mounts"][2] == {"Target": "/input/points.csv", "Source": "/srv/points/points.csv",
                                                  "Type": "bind", "ReadOnly": True}
    assert containers["prepare"]["command"][containers["prepare"]["command"].index("--dataset") + 1] == \
        "/input/points.csv"
    assert seen["render"][0]["containers"]["prepare"]["mounts"][0]["Type"] == "volume"


def test_every_container_runs_under_the_container_policy(seen):
    policy = dict(spec.CONTAINER_POLICY)
    for step, docker in seen["docker"].items():
        assert docker["network_mode"] == policy["network_mode"] == "none"
        assert docker["host_config_extra"] == {k: v for k, v in policy.items() if k != "network_mode"}
        assert docker["user"] == spec.STEP_USER
        assert docker["mount_tmp_dir"] is False
        assert docker["auto_remove"] == "force"
        assert docker["skip_on_exit_code"] == ([spec.QUALITY_GATE_EXIT] if step == "evaluate" else [])
