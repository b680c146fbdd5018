"""docker-compose.yml on the real engine (LocalExecutor): up, healthy, a DAG run through the REST
API with non-default params, its metrics on the data volume, the launch gate's refusals from
inside the scheduler, no secret in any container's `docker inspect`, the services' hardening, a
scheduler restart mid-run, the database across `down`/`up`, then `down -v` leaving nothing of the
project behind. Tests run in file order and share one stack (module)."""

from __future__ import annotations

import json
import time

import docker
import pytest
import requests

from clusterflow import spec
from tests.stack.conftest import (DAG_ID, LONG_RUNNING, Stack, assert_hardened, assert_no_secret_in_inspect,
                                  assert_nothing_left, assert_the_gate_admits_only_the_step_container,
                                  held_step, step_containers)

PARAMS = {"inits": ["random"], "n_clusters": 8}


@pytest.fixture(scope="module")
def run(stack: Stack, engine: docker.DockerClient) -> dict:
    """Log in, trigger digits_kmeans with PARAMS, and record what the launch gate answers the
    scheduler's docker SDK while the run goes through the same gate (its first step container
    held paused meanwhile, so the run is still running when probed); the finished run."""
    stack.login()
    since = int(time.time()) - 1
    run_id = stack.trigger(PARAMS)
    started = time.monotonic()
    with held_step(engine, run_id, since):
        probes = {**stack.gate_probes("airflow-scheduler"), "state when probed": stack.dag_run(run_id)["state"]}
    finished = stack.finish(run_id)
    return {"run": finished, "instances": stack.task_instances(run_id), "probes": probes,
            "seconds": time.monotonic() - started}


def test_every_service_is_healthy(stack: Stack):
    assert stack.health() == {**{s: ["healthy"] for s in LONG_RUNNING}, "airflow-init": ["exited:0"]}


def test_login_needs_the_generated_password(stack: Stack):
    answer = stack.session.post(f"{stack.url}/auth/token", json={"username": "admin", "password": "admin"},
                                timeout=30)
    assert answer.status_code == 401, answer.text


def test_a_triggered_run_with_non_default_params_succeeds(run: dict, stack: Stack):
    assert run["run"]["state"] == "success", (
        {(ti["task_id"], ti["map_index"]): ti["state"] for ti in run["instances"]},
        stack.logs("airflow-scheduler"))
    assert run["run"]["conf"] == PARAMS
    clusters = [ti for ti in run["instances"] if ti["task_id"] == "cluster"]
    assert [ti["rendered_map_index"] for ti in clusters] == ["random"]
    print(f"DAG run took {run['seconds']:.0f} s")


def test_the_gate_refuses_escapes_from_the_scheduler_during_a_run(run: dict):
    probes = dict(run["probes"])  # the module's run: read, not consumed
    assert probes.pop("state when probed") == "running", probes
    assert_the_gate_admits_only_the_step_container(probes)


def test_no_secret_is_in_any_containers_inspect(run: dict, stack: Stack):
    assert_no_secret_in_inspect(stack)


def test_services_are_hardened_and_only_the_gate_has_the_socket(stack: Stack):
    assert_hardened(stack)


def test_metrics_are_on_the_data_volume(run: dict, stack: Stack):
    run_dir = f"/data/runs/{spec.safe_run_id(run['run']['dag_run_id'])}"
    read = stack.exec_python("airflow-apiserver", (
        "import json\n"
        f"m = json.load(open('{run_dir}/evaluate/metrics.json'))\n"
        f"c = json.load(open('{run_dir}/cluster/random/manifest.json'))\n"
        "print(json.dumps({'variants': sorted(m['variants']), 'best': m['best'], 'params': c['params']}))"))
    assert read.returncode == 0, read.stderr
    found = json.loads(read.stdout)
    assert found["variants"] == ["random"] and found["best"] == "random", found
    assert found["params"]["n_clusters"] == 8, found
    # The api-server's mount is read-only.
    write = stack.exec_python("airflow-apiserver", "open('/data/probe', 'w')")
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    # The cache store is its own volume, made the steps' (uid 10001) when airflow-init first mounted it.
    owner = stack.exec_python("airflow-apiserver", (
        "import os\n"
        "mounted = [line.split()[4] for line in open('/proc/self/mountinfo')]\n"
        "print(os.stat('/data/cache').st_uid, mounted.count('/data'), mounted.count('/data/cache'))"))
    assert owner.stdout.split() == ["10001", "1", "1"], owner.stdout + owner.stderr


def test_the_report_plugin_serves_the_run_to_a_logged_in_user(run: dict, stack: Stack):
    run_id = spec.safe_run_id(run["run"]["dag_run_id"])
    metrics = stack.session.get(f"{stack.url}/clusterflow/runs/{run_id}/evaluate/metrics.json", timeout=30)
    assert metrics.status_code == 200 and metrics.json()["best"] == "random", metrics.text[:500]
    tab = stack.session.get(f"{stack.url}/clusterflow/dags/{DAG_ID}/runs/{run['run']['dag_run_id']}/report", timeout=30)
    assert tab.status_code == 200 and "<table" in tab.text
    assert requests.get(f"{stack.url}/clusterflow/runs", timeout=30).status_code == 401


def test_no_step_container_outlives_the_run(run: dict, stack: Stack):
    assert step_containers(stack, run["run"]["dag_run_id"]) == []


def test_a_scheduler_restart_mid_run_still_completes(run: dict, stack: Stack, engine: docker.DockerClient):
    """LocalExecutor tasks die with the scheduler; the new scheduler resets them and they are
    retried, each retry replacing its orphaned container. The restart lands mid-fit by
    construction: the first cluster container is held paused across it, so its task cannot have
    finished, and the orphan its dead try leaves stays paused until its retry removes it."""
    since = int(time.time()) - 1
    run_id = stack.trigger({"inits": ["k-means++", "random"], "n_clusters": 9})
    with held_step(engine, run_id, since, step="cluster") as orphan:
        task_id = engine.api.inspect_container(orphan)["Config"]["Labels"]["io.clusterflow.task_id"]
        (scheduler,) = stack.containers("airflow-scheduler", all_states=False)
        restarted = stack.docker("restart", "--time", "1", scheduler)
        assert restarted.returncode == 0, restarted.stderr
        finished = stack.finish(run_id)
    instances = stack.task_instances(run_id)
    assert finished["state"] == "success", {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    (held,) = [ti for ti in instances if f"{ti['task_id']}[{ti['rendered_map_index']}]" == task_id]
    assert held["try_number"] >= 2, instances
    removed = engine.events(since=since, until=int(time.time()) + 1, decode=True,
                            filters={"type": "container", "event": "destroy", "container": orphan})
    assert len(list(removed)) == 1  # the retry removed the orphan (paused until then: it never finished)
    assert step_containers(stack, run_id) == []


def test_the_database_and_data_survive_down_and_up(run: dict, stack: Stack):
    before = stack.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    stack.run("down", "--timeout", "20")
    assert stack.containers() == []
    stack.up(services={s: 1 for s in LONG_RUNNING})
    stack.login()
    after = stack.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    assert {(r["dag_run_id"], r["state"]) for r in after} == {(r["dag_run_id"], r["state"]) for r in before}
    assert run["run"]["dag_run_id"] in {r["dag_run_id"] for r in after}
    run_dir = f"/data/runs/{spec.safe_run_id(run['run']['dag_run_id'])}"
    read = stack.exec_python("airflow-apiserver", f"print(open('{run_dir}/evaluate/metrics.json').read()[:1])")
    assert read.returncode == 0 and read.stdout.strip() == "{", read.stderr


def test_down_removes_every_container_network_and_volume(stack: Stack):
    assert_nothing_left(stack)
