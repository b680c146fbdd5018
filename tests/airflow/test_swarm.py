"""`CLUSTERFLOW_LAUNCHER=swarm`: the DAG's steps as one-shot Docker Swarm services
(DockerSwarmOperator) on a single-node swarm of the test engine, which the module makes a swarm
manager if it is not one yet (and leaves the swarm again afterwards)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from clusterflow import spec
from tests.airflow.conftest import VENV, without_timings
from tests.airflow.test_dags_test import DagsTest
from tests.fixtures.docker import writable_data_dir

pytestmark = pytest.mark.container
SWARM = {"CLUSTERFLOW_LAUNCHER": "swarm"}


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def swarm(docker_cli: str) -> Iterator[None]:
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    joined = state == "inactive"
    if joined:
        made = docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        assert made.returncode == 0, f"docker swarm init failed: {made.stderr}"
    elif state != "active":
        pytest.fail(f"the engine's swarm state is {state!r}: `docker swarm leave --force`, then rerun",
                    pytrace=False)
    yield
    if joined:
        docker("swarm", "leave", "--force")


def services() -> list[str]:
    return [n for n in docker("service", "ls", "--format", "{{.Name}}").stdout.split() if n.startswith("clusterflow-")]


@pytest.fixture(scope="module")
def home(airflow_venv, tmp_path_factory):
    return tmp_path_factory.mktemp("swarm-home")


@pytest.fixture(scope="module")
def swarm_run(swarm, home, tmp_path_factory) -> DagsTest:
    return DagsTest(home, writable_data_dir(tmp_path_factory, "swarm-data"), {"inits": ["random", "pca"]}, **SWARM)


def test_the_steps_run_as_swarm_services_and_the_run_succeeds(swarm_run):
    assert swarm_run.result.returncode == 0, swarm_run.output[-6000:]
    assert swarm_run.task_states() == {"plan": "success", "prepare": "success", "cluster[0]": "success",
                                       "cluster[1]": "success", "evaluate": "success", "report": "success",
                                       "outcome": "skipped"}
    # the 5 steps, then a commit container for each but the report (its page shows run ids)
    assert swarm_run.output.count("Service started:") == 5 + 4
    assert (swarm_run.run_dir / "report/report.html").is_file()
    assert services() == []


def test_evaluate_still_pushes_its_summary(swarm_run):
    metrics = json.loads((swarm_run.run_dir / "evaluate/metrics.json").read_text())
    summary = swarm_run.xcom("evaluate")
    assert summary is not None and summary["best"] == metrics["best"]
    assert without_timings(summary["metrics"]) == without_timings(metrics["variants"][metrics["best"]])
    assert sorted(metrics["variants"]) == ["pca", "random"]


def test_a_gate_breach_on_swarm_fails_evaluate_once_and_still_reports(swarm, home, tmp_path_factory, swarm_run):
    gated = DagsTest(home, writable_data_dir(tmp_path_factory, "swarm-gated"),
                     {"inits": ["k-means++"], "min_ari": 0.99}, **SWARM)
    assert gated.task_states() == {"plan": "success", "prepare": "success", "cluster[0]": "success",
                                   "evaluate": "failed", "report": "success", "outcome": "failed"}
    assert "quality gate failed (exit 3): Error: quality gate failed for best variant k-means++" in gated.output
    assert gated.output.count("==> evaluate:") == 1
    assert gated.result.returncode != 0 and gated.run and gated.run["state"] == "failed"
    report = (gated.run_dir / "report/report.html").read_text()  # it still reports: the breach, documented
    assert "quality gate failed" in report.lower() and "k-means++" in report
    assert services() == []


def test_the_service_container_gets_the_container_policy(airflow_venv):
    """What _PolicyClient.create_service hands the engine for a step's service."""
    code = (
        "import json\n"
        "from docker import types\n"
        "from clusterflow.operators import _PolicyClient\n"
        "class Engine:\n"
        "    def create_service(self, template, **kw):\n"
        "        print(json.dumps(template['ContainerSpec']))\n"
        "spec = types.ContainerSpec('img', None, args=['--run-id', 'r'], user='10001:10001',\n"
        "                           mounts=[types.Mount('/data', 'vol')])\n"
        "_PolicyClient(Engine(), {}, {'io.clusterflow.run_id': 'r'}).create_service(types.TaskTemplate(spec))\n")
    done = subprocess.run([str(VENV / "bin/python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    container: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert container["ReadOnly"] is spec.CONTAINER_POLICY["read_only"] is True
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["Labels"] == {"io.clusterflow.run_id": "r"}
    assert container["Mounts"][1] == {"Target": "/tmp", "Source": None, "Type": "tmpfs", "ReadOnly": False,
                                      "TmpfsOptions": {"SizeBytes": 512 * 1024 ** 2}}
