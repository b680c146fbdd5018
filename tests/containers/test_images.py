"""Each step image on its own: entrypoint, user, labels, contents, `docker run` by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from clusterflow import spec
from clusterflow.version import VERSION
from tests.containers.conftest import image

pytestmark = pytest.mark.container


def docker(cli: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("step", spec.STEPS)
def test_each_step_image_is_its_cli_run_as_non_root(docker_cli, step):
    result = docker(docker_cli, "run", "--rm", image(step), "--help")
    assert result.returncode == 0, result.stderr
    assert "--run-id" in result.stdout and "CLUSTERFLOW_RUN_ID" in result.stdout
    config = json.loads(docker(docker_cli, "image", "inspect", image(step)).stdout)[0]["Config"]
    assert config["User"] == spec.STEP_USER
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert {"org.opencontainers.image.source", "org.opencontainers.image.revision"} <= set(config["Labels"])


@pytest.mark.parametrize("step", spec.STEPS)
def test_only_the_report_image_has_matplotlib_and_none_has_pip(docker_cli, step):
    probe = ("import importlib.util as u; "
             "print(bool(u.find_spec('matplotlib')), bool(u.find_spec('pip')), bool(u.find_spec('sklearn')))")
    result = docker(docker_cli, "run", "--rm", "--entrypoint", "python", image(step), "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(step == "report"), "False", "True"]


def test_docker_run_of_each_step_by_hand_chains_through_the_volume(docker_cli, data_dir: Path):
    """The README's by-hand sequence: prepare, one cluster variant, evaluate, report."""
    for step, *args in (("prepare",), ("cluster", "--init", "random"), ("evaluate",), ("report",)):
        result = docker(docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", image(step), "--run-id", "demo", *args)
        assert result.returncode == 0, (step, result.stderr)
    run_dir = data_dir / "runs" / "demo"
    assert sorted(p.name for p in (run_dir / "prepare").iterdir()) == ["features.npy", "labels.npy", "manifest.json"]
    prepare = json.loads((run_dir / "prepare/manifest.json").read_text())
    assert prepare["step"] == "prepare" and prepare["exit_status"] == 0 and prepare["params"]["dataset"] == "digits"
    assert prepare["image"] == {"name": None, "digest": None}  # nobody told the step; the runners do
    metrics = json.loads((run_dir / "evaluate/metrics.json").read_text())
    assert list(metrics["variants"]) == ["random"] and metrics["best"] == "random"
    assert (run_dir / "report/report.html").stat().st_size > 10_000


def test_options_are_settable_by_environment_variables(docker_cli, data_dir: Path):
    result = docker(docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", "-e", "CLUSTERFLOW_RUN_ID=env-run",
                    "-e", "CLUSTERFLOW_DATASET=synthetic", "-e", "CLUSTERFLOW_N_SAMPLES=300", image("prepare"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((data_dir / "runs/env-run/prepare/manifest.json").read_text())
    assert manifest["params"]["dataset"] == "synthetic" and manifest["results"]["n_samples"] == 300


@pytest.mark.parametrize("run_id", ["../escape", "a/b"])
def test_a_bad_run_id_is_one_line_and_exit_2(docker_cli, data_dir: Path, run_id):
    result = docker(docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", image("prepare"), "--run-id", run_id)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid run id" in result.stderr
    assert list(data_dir.iterdir()) == []


def test_an_unwritable_data_root_says_how_to_fix_it(docker_cli, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)  # owned by the test user, not writable by the image's uid 10001
    result = docker(docker_cli, "run", "--rm", "--user", "10001:10001", "-v", f"{locked}:/data",
                    image("prepare"), "--run-id", "r")
    assert result.returncode == 2, result.stderr
    line, = result.stderr.strip().splitlines()
    assert "cannot write" in line and "--user" in line
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("step", ["cluster", "report"])
def test_installed_packages_carry_no_sources_headers_or_test_suites(docker_cli, step):
    """images/base/slim-packages.sh ran over every installed package (base venv and report extras)."""
    site = "/opt/venv/lib/python3.11/site-packages"
    probe = (f"find {site} \\( -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pyi' \\) -print -quit; "
             f"find {site} -type d -name tests -print -quit")
    result = docker(docker_cli, "run", "--rm", "--entrypoint", "sh", image(step), "-c", probe)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
