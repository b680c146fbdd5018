"""Stack tests: docker-compose.yml brought up on the real Docker engine, one unique project.

They never skip: a missing docker-compose is installed (as root on Debian: apt-get), otherwise
every test here fails with the command to run. Images: the step images (scripts/build-images.sh,
through the shared ``docker_cli`` fixture), then the stack's (scripts/build-stack-images.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clusterflow import spec

from tests.containers.conftest import docker_cli, engine  # noqa: F401  (shared fixtures)

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DAG_ID = spec.DAG_ID
LONG_RUNNING = ("postgres", "socket-proxy", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer")
RUN_DONE = ("success", "failed")


def _install_hint() -> str:
    return ("docker-compose is missing: install it with `apt-get install -y docker-compose` (Debian/Ubuntu, "
            "as root) or install the Docker Compose v2 plugin, or set CLUSTERFLOW_COMPOSE to its command")


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    """The compose CLI: $CLUSTERFLOW_COMPOSE, else docker-compose (installed if missing), else v2."""
    if os.environ.get("CLUSTERFLOW_COMPOSE"):
        return os.environ["CLUSTERFLOW_COMPOSE"].split()
    if not shutil.which("docker-compose"):
        if os.geteuid() == 0 and Path("/etc/debian_version").exists():
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            install = ["apt-get", "install", "-y", "-qq", "docker-compose"]
            if subprocess.run(install, env=env, capture_output=True).returncode:
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
                done = subprocess.run(install, env=env, capture_output=True, text=True)
                if done.returncode:
                    pytest.fail(f"apt-get install docker-compose failed:\n{done.stderr[-2000:]}", pytrace=False)
        elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
            return ["docker", "compose"]
        else:
            pytest.fail(_install_hint(), pytrace=False)
    return ["docker-compose"]


@pytest.fixture(scope="session")
def stack_images(docker_cli: str) -> str:  # noqa: F811
    """Build the Airflow image (and the stand-ins where needed); their `NAME=image` lines."""
    build = subprocess.run([str(REPO / "scripts/build-stack-images.sh")], capture_output=True, text=True,
                           timeout=1800)
    if build.returncode:
        pytest.fail(f"building the stack images failed:\n{build.stderr[-4000:]}", pytrace=False)
    return build.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """One compose project of docker-compose.yml, with its own .env, port and data volume;
    ``profiles`` and ``env`` (e.g. AIRFLOW_EXECUTOR) apply to every compose command."""

    def __init__(self, compose: list[str], env_file: Path, project: str, port: int, data_volume: str,
                 profiles: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.compose, self.env_file, self.project = compose, env_file, project
        self.port, self.data_volume = port, data_volume
        self.profiles, self.env = profiles, env or {}
        self.url = f"http://127.0.0.1:{port}"
        self.settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                             if line and not line.startswith("#"))
        self.session = requests.Session()

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AIRFLOW_PORT": str(self.port), "CLUSTERFLOW_DATA_VOLUME": self.data_volume,
               **self.env}
        env.pop("CLUSTERFLOW_IMAGE_TAG", None)
        profiles = [arg for profile in self.profiles for arg in ("--profile", profile)]
        result = subprocess.run([*self.compose, "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file),
                                 "-p", self.project, *profiles, *args], env=env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode:
            pytest.fail(f"{' '.join(self.compose)} {' '.join(args)} failed ({result.returncode}):\n"
                        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}", pytrace=False)
        return result

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)

    def containers(self, service: str | None = None, all_states: bool = True) -> list[str]:
        label = f"com.docker.compose.project={self.project}"
        args = ["ps", "-q", "--filter", f"label={label}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        if all_states:
            args.insert(1, "-a")
        return self.docker(*args).stdout.split()

    def health(self) -> dict[str, list[str]]:
        """Service → the health status (or state, without a healthcheck) of each of its containers."""
        found: dict[str, list[str]] = {}
        for cid in self.containers():
            info = json.loads(self.docker("inspect", cid).stdout)[0]
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            state = info["State"]
            status = state.get("Health", {}).get("Status") or f"{state['Status']}:{state['ExitCode']}"
            found.setdefault(service, []).append(status)
        return found

    def up(self, *args: str, services: dict[str, int]) -> float:
        """``up -d ARGS``, then wait until ``services`` (name → container count) are all healthy
        and airflow-init has exited 0; the seconds that took."""
        started = time.monotonic()
        self.run("up", "-d", *args, timeout=900)
        expected = {**{s: ["healthy"] * n for s, n in services.items()}, "airflow-init": ["exited:0"]}
        self.wait("every service healthy", lambda: self.health() == expected, timeout=300, every=3)
        return time.monotonic() - started

    def logs(self, service: str, tail: int = 60) -> str:
        return self.run("logs", "--no-color", "--tail", str(tail), service, check=False).stdout

    def wait(self, what: str, ready: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = ready()
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; services: {self.health()}",
                            pytrace=False)
            time.sleep(every)

    def login(self) -> None:
        answer = self.session.post(f"{self.url}/auth/token", timeout=30,
                                   json={"username": "admin", "password": self.settings["AIRFLOW_ADMIN_PASSWORD"]})
        assert answer.status_code in (200, 201), answer.text
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/api/v2{path}", timeout=30, **kwargs)

    def exec_python(self, service: str, code: str) -> subprocess.CompletedProcess[str]:
        (cid,) = self.containers(service, all_states=False)
        return self.docker("exec", cid, "python3", "-c", code)

    def trigger(self, conf: dict[str, Any]) -> str:
        """Unpause digits_kmeans (once parsed) and trigger a run with ``conf``; its run id."""
        self.wait("the DAG to be parsed", lambda: self.api("GET", f"/dags/{DAG_ID}").status_code == 200, 180)
        answer = self.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        assert answer.status_code == 200 and answer.json()["is_paused"] is False, answer.text
        answer = self.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
        assert answer.status_code == 200, answer.text
        return answer.json()["dag_run_id"]

    def dag_run(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]

    def finish(self, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """Wait for the run to succeed or fail; the finished run."""
        self.wait(f"run {run_id} to finish", lambda: self.dag_run(run_id)["state"] in RUN_DONE, timeout, every=3)
        return self.dag_run(run_id)


@contextlib.contextmanager
def running_stack(compose: list[str], images: str, home: Path, services: dict[str, int],
                  up_args: tuple[str, ...] = (), **options: Any) -> Iterator[Stack]:
    """docker-compose.yml up and healthy under a unique project name; `down -v` afterwards."""
    env_file = home / ".env"
    made = subprocess.run([str(REPO / "scripts/stack-env.sh"), str(env_file)], capture_output=True, text=True,
                          env={**os.environ, "STACK_IMAGES": images})
    if made.returncode:
        pytest.fail(f"scripts/stack-env.sh failed:\n{made.stderr}", pytrace=False)
    project = f"cfstack{uuid.uuid4().hex[:10]}"
    stack = Stack(compose, env_file, project, _free_port(), f"{project}-data", **options)
    try:
        seconds = stack.up(*up_args, services=services)
        print(f"\nstack {project} healthy {seconds:.0f} s after `up -d`")
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False)


def assert_nothing_left(stack: Stack) -> None:
    """`down -v`, then no container, network or volume of the project is left."""
    stack.run("down", "-v", "--remove-orphans", "--timeout", "20")
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.docker("ps", "-aq", "--filter", label).stdout.split() == []
    assert stack.docker("network", "ls", "-q", "--filter", label).stdout.split() == []
    assert stack.docker("volume", "ls", "-q", "--filter", label).stdout.split() == []
    volumes = stack.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert [v for v in volumes if v.startswith(stack.project)] == []


def step_containers(stack: Stack, airflow_run_id: str) -> list[str]:
    """The step containers (any state) of one DAG run on the engine."""
    label = f"io.clusterflow.run_id={spec.safe_run_id(airflow_run_id)}"
    return stack.docker("ps", "-aq", "--filter", f"label={label}").stdout.split()


@pytest.fixture(scope="module")
def stack(compose_command: list[str], stack_images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The default (LocalExecutor) stack."""
    with running_stack(compose_command, stack_images, tmp_path_factory.mktemp("stack"),
                       services={s: 1 for s in LONG_RUNNING}) as stack:
        yield stack
