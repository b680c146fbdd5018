"""The compose stack's `celery` profile on the real engine: Redis and two Celery workers
(`--scale airflow-worker=2`), a DAG run whose every task runs on a worker, the launch gate's
refusals from inside a worker, no secret in any container's `docker inspect` (Redis and the
workers included), then `down -v` leaving nothing behind. A worker under any other executor
refuses to start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.stack.conftest import (DAG_ID, LONG_RUNNING, Stack, assert_hardened, assert_no_secret_in_inspect,
                                  assert_nothing_left, assert_the_gate_admits_only_the_step_container,
                                  running_stack, step_containers)

WORKERS = 2
CELERY = {"AIRFLOW_EXECUTOR": "CeleryExecutor"}


@pytest.fixture(scope="module")
def stack(compose_command: list[str], stack_images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    services = {**{s: 1 for s in LONG_RUNNING}, "redis": 1, "airflow-worker": WORKERS}
    with running_stack(compose_command, stack_images, tmp_path_factory.mktemp("celery"), services=services,
                       up_args=("--scale", f"airflow-worker={WORKERS}"), profiles=("celery",), env=CELERY) as stack:
        yield stack


def test_every_task_of_a_run_runs_on_a_celery_worker(stack: Stack):
    stack.login()
    run_id = stack.trigger({"inits": ["random", "k-means++"]})
    finished = stack.finish(run_id)
    instances = stack.task_instances(run_id)
    assert finished["state"] == "success", {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    workers = {stack.docker("inspect", "-f", "{{.Config.Hostname}}", cid).stdout.strip()
               for cid in stack.containers("airflow-worker", all_states=False)}
    assert len(workers) == WORKERS
    ran = [ti for ti in instances if ti["state"] != "skipped"]
    assert len(ran) == 6 and {ti["hostname"] for ti in ran} <= workers, (workers, instances)
    assert step_containers(stack, run_id) == []
    # The API server reads a task's log from the shared logs volume (for a running task, also from
    # the log server of the worker that runs it, port 8793).
    log = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/prepare/logs/1",
                    headers={"Accept": "application/json"})
    assert log.status_code == 200 and "==> prepare: clusterflow/prepare" in log.text, log.text[-2000:]


def test_the_gate_refuses_escapes_from_a_celery_worker(stack: Stack):
    assert_the_gate_admits_only_the_step_container(stack.gate_probes("airflow-worker"))


def test_no_secret_is_in_any_containers_inspect_and_workers_lack_the_database(stack: Stack):
    assert_no_secret_in_inspect(stack)
    assert_hardened(stack)
    # Task code on a worker: no database setting at all (only the execution API's token).
    found = stack.exec_python("airflow-worker", "import os; print([k for k in os.environ if '__DATABASE__' in k])")
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stdout + found.stderr


def test_down_removes_every_container_network_and_volume(stack: Stack):
    assert_nothing_left(stack)


def test_a_worker_refuses_to_start_without_the_celery_executor(stack_images: str):
    started = subprocess.run(["docker", "run", "--rm", "-e", "AIRFLOW__CORE__EXECUTOR=LocalExecutor",
                              "clusterflow/airflow:latest", "celery", "worker"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2
    assert "AIRFLOW_EXECUTOR=CeleryExecutor" in started.stderr.strip().splitlines()[-1], started.stderr
