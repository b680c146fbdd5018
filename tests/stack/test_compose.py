"""docker-compose.yml on the real engine: up, healthy, a DAG run through the REST API with
non-default params, its metrics on the data volume, the socket proxy's refusals, then `down -v`
leaving nothing of the project behind. Tests run in file order and share one stack (module)."""

from __future__ import annotations

import json
import time

import pytest

from clusterflow import spec
from tests.stack.conftest import DAG_ID, Stack

PARAMS = {"inits": ["random"], "n_clusters": 8}


def proxy_status(stack: Stack, path: str, method: str = "GET") -> int:
    """The socket proxy's HTTP status for METHOD PATH, asked from the scheduler (the tasks' side)."""
    done = stack.exec_python("airflow-scheduler", (
        "import urllib.request, urllib.error\n"
        f"request = urllib.request.Request('http://socket-proxy:2375{path}', method='{method}')\n"
        "try:\n"
        "    print(urllib.request.urlopen(request, timeout=10).status)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"))
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.fixture(scope="module")
def run(stack: Stack) -> dict:
    """Log in, unpause digits_kmeans, trigger it with PARAMS, and record what the proxy answers
    while it runs; the finished run."""
    stack.login()
    stack.wait("the DAG to be parsed", lambda: stack.api("GET", f"/dags/{DAG_ID}").status_code == 200, 180)
    answer = stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    assert answer.status_code == 200 and answer.json()["is_paused"] is False, answer.text
    answer = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": PARAMS})
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["dag_run_id"]
    started = time.monotonic()

    def state() -> str:
        return stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]

    stack.wait("the run to start", lambda: state() != "queued", 120, every=1)
    probes = {"GET /volumes": proxy_status(stack, "/volumes"),
              "GET /containers/json": proxy_status(stack, "/containers/json"),
              "POST /images/create": proxy_status(stack, "/images/create?fromImage=busybox", "POST"),
              "GET /_ping": proxy_status(stack, "/_ping"),
              "state when probed": state()}
    stack.wait("the run to finish", lambda: state() in ("success", "failed"), 600, every=3)
    finished = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
    instances = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    return {"run": finished, "instances": instances, "probes": probes, "seconds": time.monotonic() - started}


def test_every_service_is_healthy(stack: Stack):
    health = stack.health()
    assert health.pop("airflow-init") == "exited:0"
    assert health == {service: "healthy" for service in health} and len(health) == 6, health


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


def test_the_proxy_refuses_what_dag_runs_do_not_need(run: dict):
    probes = run["probes"]
    assert probes["state when probed"] == "running", probes
    assert probes["GET /_ping"] == 200, probes
    assert probes["GET /volumes"] == 403, probes
    assert probes["GET /containers/json"] == 403, probes
    assert probes["POST /images/create"] == 403, probes


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


def test_no_step_container_outlives_the_run(run: dict, stack: Stack):
    label = f"io.clusterflow.run_id={spec.safe_run_id(run['run']['dag_run_id'])}"
    assert stack.docker("ps", "-aq", "--filter", f"label={label}").stdout.split() == []


def test_down_removes_every_container_network_and_volume(stack: Stack):
    stack.run("down", "-v", "--remove-orphans", "--timeout", "20")
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.docker("ps", "-aq", "--filter", label).stdout.split() == []
    assert stack.docker("network", "ls", "-q", "--filter", label).stdout.split() == []
    assert stack.docker("volume", "ls", "-q", "--filter", label).stdout.split() == []
    volumes = stack.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert [v for v in volumes if v.startswith(stack.project)] == []
