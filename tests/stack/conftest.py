"""Stack tests: docker-compose.yml brought up on the real Docker engine, one unique project.

They never skip: a missing docker-compose is installed (as root on Debian: apt-get), otherwise
every test here fails with the command to run. Images: the step images (scripts/build-images.sh,
through the shared ``docker_cli`` fixture), then the stack's (scripts/build-stack-images.sh).
"""

from __future__ import annotations

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

from tests.containers.conftest import docker_cli, engine  # noqa: F401  (shared fixtures)

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DAG_ID = "digits_kmeans"
LONG_RUNNING = ("postgres", "socket-proxy", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer")


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
    """One compose project of docker-compose.yml, with its own .env, port and data volume."""

    def __init__(self, compose: list[str], env_file: Path, project: str, port: int, data_volume: str):
        self.compose, self.env_file, self.project = compose, env_file, project
        self.port, self.data_volume = port, data_volume
        self.url = f"http://127.0.0.1:{port}"
        self.settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                             if line and not line.startswith("#"))
        self.session = requests.Session()

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AIRFLOW_PORT": str(self.port), "CLUSTERFLOW_DATA_VOLUME": self.data_volume}
        env.pop("CLUSTERFLOW_IMAGE_TAG", None)
        result = subprocess.run([*self.compose, "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file),
                                 "-p", self.project, *args], env=env, capture_output=True, text=True,
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

    def health(self) -> dict[str, str]:
        """Service → health status (or state, for services without a healthcheck)."""
        found = {}
        for cid in self.containers():
            info = json.loads(self.docker("inspect", cid).stdout)[0]
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            state = info["State"]
            found[service] = state.get("Health", {}).get("Status") or f"{state['Status']}:{state['ExitCode']}"
        return found

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


@pytest.fixture(scope="module")
def stack(compose_command: list[str], stack_images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """docker-compose.yml up and healthy under a unique project name; `down -v` afterwards."""
    home = tmp_path_factory.mktemp("stack")
    env_file = home / ".env"
    made = subprocess.run([str(REPO / "scripts/stack-env.sh"), str(env_file)], capture_output=True, text=True,
                          env={**os.environ, "STACK_IMAGES": stack_images})
    if made.returncode:
        pytest.fail(f"scripts/stack-env.sh failed:\n{made.stderr}", pytrace=False)
    project = f"cfstack{uuid.uuid4().hex[:10]}"
    stack = Stack(compose_command, env_file, project, _free_port(), f"{project}-data")
    try:
        started = time.monotonic()
        stack.run("up", "-d", timeout=900)
        stack.wait("every service healthy", lambda: all(stack.health().get(s) == "healthy" for s in LONG_RUNNING)
                   and stack.health().get("airflow-init") == "exited:0", timeout=300, every=3)
        print(f"\nstack {project} healthy {time.monotonic() - started:.0f} s after `up -d`")
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
