"""The compose stack's `celery` profile on the real engine: Redis and two Celery workers
(`--scale airflow-worker=2`) running the step images one publish pinned (the session registry's
digests file given to scripts/stack-env.sh): a DAG run whose every task runs on a worker and
pulls its step image by digest, absent from the engine before, present after; the launch gate's
refusals from inside a worker; the `registry` profile's registry (on a free loopback port) takes a
push and serves a pull by digest; no secret in any container's `docker inspect` (Redis and the
workers included), then `down -v` leaving nothing behind. A worker under any other executor
refuses to start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from clusterflow import spec

from tests.fixtures.registry import Published
from tests.stack.conftest import (DAG_ID, LONG_RUNNING, Stack, assert_hardened, assert_no_secret_in_inspect,
                                  assert_nothing_left, assert_the_gate_admits_only_the_step_container, free_port,
                                  running_stack, step_containers)

WORKERS = 2
CELERY = {"AIRFLOW_EXECUTOR": "CeleryExecutor"}


@pytest.fixture(scope="module")
def stack(compose_command: list[str], stack_images: str, published: Published,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    services = {**{s: 1 for s in LONG_RUNNING}, "redis": 1, "airflow-worker": WORKERS, "registry": 1}
    with running_stack(compose_command, stack_images, tmp_path_factory.mktemp("celery"), services=services,
                       digests=published.digests_file,
                       up_args=("--scale", f"airflow-worker={WORKERS}"), profiles=("celery", "registry"),
                       env={**CELERY, "REGISTRY_PORT": str(free_port())}) as stack:
        yield stack


def present(stack: Stack, refs: dict[str, str]) -> set[str]:
    return {step for step, ref in refs.items() if stack.docker("image", "inspect", ref).returncode == 0}


@pytest.fixture
def pinned_refs(stack: Stack, published: Published) -> Iterator[dict[str, str]]:
    """Step -> its pinned reference, absent from the engine when the test starts and again after
    it: only these digest references (of the session's registry) are removed, no other image."""
    refs = {step: published.pins.ref(step) for step in spec.STEPS}
    for step in present(stack, refs):  # pulled earlier in this session
        stack.docker("rmi", refs[step])
    yield refs
    for step in present(stack, refs):
        stack.docker("rmi", refs[step])


def test_every_task_of_a_run_runs_on_a_celery_worker_and_pulls_its_pinned_image(stack: Stack, pinned_refs):
    assert present(stack, pinned_refs) == set()
    stack.login()
    # The engine's own record of the pulls, streamed while the run goes (its buffer of past events
    # holds only the last 256, fewer than a Celery run makes); the actor is the reference pulled.
    pulls = subprocess.Popen(["docker", "events", "--since", str(int(time.time())), "--filter", "type=image",
                              "--filter", "event=pull", "--format", "{{.Actor.ID}}"],
                             stdout=subprocess.PIPE, text=True)
    try:
        run_id = stack.trigger({"inits": ["random", "k-means++"]})
        finished = stack.finish(run_id)
    finally:
        pulls.terminate()
        pulled = set(pulls.communicate(timeout=30)[0].split())
    instances = stack.task_instances(run_id)
    assert finished["state"] == "success", {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert present(stack, pinned_refs) == set(spec.STEPS)
    workers = {stack.docker("inspect", "-f", "{{.Config.Hostname}}", cid).stdout.strip()
               for cid in stack.containers("airflow-worker", all_states=False)}
    assert len(workers) == WORKERS
    ran = [ti for ti in instances if ti["state"] != "skipped"]
    assert len(ran) == 6 and {ti["hostname"] for ti in ran} <= workers, (workers, instances)
    assert step_containers(stack, run_id) == []
    # During the run the engine pulled every pinned reference, by digest, and nothing else.
    assert pulled == set(pinned_refs.values()), pulled
    # The API server reads a task's log from the shared logs volume (for a running task, also from
    # the log server of the worker that runs it, port 8793). Each step ran its pinned reference; a
    # task that pulled logged the pull of exactly that reference and the engine's digest for it.
    logs = {(ti["task_id"], ti["map_index"]): stack.api(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/1",
        params={"map_index": ti["map_index"]}, headers={"Accept": "application/json"}).text
        for ti in ran if ti["task_id"] in spec.STEPS}
    for step, ref in pinned_refs.items():
        texts = [text for (task, _), text in logs.items() if task == step]
        assert texts and all(f": {ref} " in text for text in texts), (step, ref, [t[-1500:] for t in texts])
        pulls = [text for text in texts if "Pulling docker image" in text]
        assert all(f"Pulling docker image {ref}" in text and f"Digest: {ref.split('@')[1]}" in text
                   for text in pulls), (step, [event for text in texts for event in text.split('"event":')
                                               if "ull" in event or "::" in event])
    assert any("Pulling docker image" in text for text in logs.values()), "no task logged a pull"


def test_the_gate_refuses_escapes_from_a_celery_worker(stack: Stack, pinned_refs):
    # the probe creates a container of the pinned prepare image: on the engine for this test only
    assert stack.docker("pull", pinned_refs["prepare"], timeout=300).returncode == 0
    assert_the_gate_admits_only_the_step_container(stack.gate_probes("airflow-worker"))


def test_no_secret_is_in_any_containers_inspect_and_workers_lack_the_database(stack: Stack):
    assert_no_secret_in_inspect(stack)
    assert_hardened(stack)
    # Task code on a worker: no database setting at all (only the execution API's token).
    found = stack.exec_python("airflow-worker", "import os; print([k for k in os.environ if '__DATABASE__' in k])")
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stdout + found.stderr


def test_the_registry_profile_takes_a_push_and_serves_a_pull_by_digest(stack: Stack):
    (registry,) = stack.inspect()["registry"]
    host = registry["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and not host["CapAdd"], host
    assert registry["Config"]["User"] == "docker-registry"
    assert host["PortBindings"] == {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": stack.env["REGISTRY_PORT"]}]}
    probe = f"127.0.0.1:{stack.env['REGISTRY_PORT']}/clusterflow-stack-test/probe"
    image = registry["Image"]  # the registry's own image: present, and only the probe's refs are removed
    made = [f"{probe}:1"]
    try:
        assert stack.docker("tag", image, made[0]).returncode == 0
        pushed = stack.docker("push", made[0], timeout=300)
        assert pushed.returncode == 0, pushed.stderr
        pinned = f"{probe}@{pushed.stdout.split('digest: ')[1].split()[0]}"
        made.append(pinned)
        # untagging the only tag of the repository drops its digest reference too
        assert stack.docker("rmi", made[0]).returncode == 0 and stack.docker("image", "inspect", pinned).returncode
        pulled = stack.docker("pull", pinned, timeout=300)
        assert pulled.returncode == 0 and f"Digest: {pinned.split('@')[1]}" in pulled.stdout, pulled
        assert stack.docker("image", "inspect", "-f", "{{.Id}}", pinned).stdout.strip() == image
    finally:
        left = [ref for ref in made if stack.docker("image", "inspect", ref).returncode == 0]
        if left:
            stack.docker("rmi", *left)


def test_down_removes_every_container_network_and_volume(stack: Stack):
    assert_nothing_left(stack)


def test_a_worker_refuses_to_start_without_the_celery_executor(stack_images: str):
    started = subprocess.run(["docker", "run", "--rm", "-e", "AIRFLOW__CORE__EXECUTOR=LocalExecutor",
                              "clusterflow/airflow:latest", "celery", "worker"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2
    assert "AIRFLOW_EXECUTOR=CeleryExecutor" in started.stderr.strip().splitlines()[-1], started.stderr
