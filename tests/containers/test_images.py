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


@pytest.mark.parametrize("step", spec.IMAGES)
def test_each_step_image_is_its_cli_run_as_non_root(docker_cli, step):
    result = docker(docker_cli, "run", "--rm", image(step), "--help")
    assert result.returncode == 0, result.stderr
    assert "--run-id" in result.stdout and "CLUSTERFLOW_RUN_ID" in result.stdout
    config = json.loads(docker(docker_cli, "image", "inspect", image(step)).stdout)[0]["Config"]
    assert config["User"] == spec.STEP_USER
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert {"org.opencontainers.image.source", "org.opencontainers.image.revision"} <= set(config["Labels"])


ML_PACKAGES = ("sklearn", "scipy", "joblib", "threadpoolctl", "narwhals", "cloudpickle")


@pytest.mark.parametrize("step", spec.IMAGES)
def test_only_the_report_image_has_matplotlib_and_none_has_pip(docker_cli, step):
    probe = ("import importlib.util as u; "
             "print(bool(u.find_spec('matplotlib')), bool(u.find_spec('pip')), bool(u.find_spec('sklearn')))")
    result = docker(docker_cli, "run", "--rm", "--entrypoint", "python", image(step), "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(step == "report"), "False", str(step != "report")]


@pytest.mark.parametrize("step", spec.IMAGES)
def test_the_report_image_has_no_scikit_learn_layer_and_the_others_have_all_of_it(docker_cli, step):
    probe = f"import importlib.util as u; print(sorted(m for m in {ML_PACKAGES!r} if u.find_spec(m)))"
    result = docker(docker_cli, "run", "--rm", "--entrypoint", "python", image(step), "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([] if step == "report" else sorted(ML_PACKAGES))


def layers(docker_cli: str, ref: str) -> list[str]:
    return json.loads(docker(docker_cli, "image", "inspect", ref).stdout)[0]["RootFS"]["Layers"]


def test_every_step_image_shares_the_core_layers_and_three_share_the_scikit_learn_layer(docker_cli):
    """clusterflow/core (python, numpy, click) is the bottom of all five; clusterflow/base (core + the
    scikit-learn layer) of prepare, cluster, evaluate and assign; so numpy's layer is stored once."""
    core, base = layers(docker_cli, f"clusterflow/core:{VERSION}"), layers(docker_cli, f"clusterflow/base:{VERSION}")
    assert base[:len(core)] == core and len(base) > len(core)
    for step in spec.IMAGES:
        own = layers(docker_cli, image(step))
        assert own[:len(core)] == core, step
        assert (own[:len(base)] == base) == (step != "report"), step


@pytest.mark.parametrize("step", spec.IMAGES)
def test_installed_packages_are_sourceless_bytecode_and_our_code_keeps_its_sources(docker_cli, step):
    """images/base/slim-packages.sh left .pyc beside each module of site-packages, no .py, no __pycache__;
    the .pyc name their files as they are at run time (/opt/venv, not a staging directory)."""
    site = "/opt/venv/lib/python3.11/site-packages"
    probe = (f"find {site} -name '*.py' -print -quit; find {site} -name __pycache__ -print -quit; "
             f"find {site} -name '*.pyc' | wc -l; ls /app/clusterflow_steps/{step}/cli.py")
    result = docker(docker_cli, "run", "--rm", "--entrypoint", "sh", image(step), "-c", probe)
    assert result.returncode == 0, result.stdout + result.stderr
    count, app = result.stdout.split()
    assert int(count) > 500 and app == f"/app/clusterflow_steps/{step}/cli.py"
    module = "matplotlib.colors" if step == "report" else "sklearn.cluster._kmeans"
    code = f"import {module} as m, numpy; print(m.__file__); print(numpy.__file__)"
    result = docker(docker_cli, "run", "--rm", "--entrypoint", "python", image(step), "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{site}/{module.replace('.', '/')}.pyc", f"{site}/numpy/__init__.pyc"]
    traceback = docker(docker_cli, "run", "--rm", "--entrypoint", "python", image(step), "-c",
                       f"import {module} as m; print(m.__loader__.get_code(m.__name__).co_filename)")
    assert traceback.stdout.strip() == f"{site}/{module.replace('.', '/')}.py", traceback.stderr


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
