"""orchestration/airflow/settings.env reaches every Airflow: the embedded one (scripts/airflow.sh)
and each component of the Compose stack (the clusterflow/airflow image's entrypoint), the
environment winning over the file in both. No Airflow needed: a stand-in `airflow` prints what it got."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.airflow.conftest import AIRFLOW_SH, REPO

SETTINGS = REPO / "orchestration" / "airflow" / "settings.env"
ENTRYPOINT = REPO / "images" / "airflow" / "entrypoint.sh"
DOCKERFILE = REPO / "images" / "airflow" / "Dockerfile"
IDLE_SLEEP = "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"


def settings() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in SETTINGS.read_text().splitlines() if line and not line.startswith("#")]
    return dict(pairs)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {**env, **extra}


def test_the_file_holds_plain_airflow_settings_and_a_short_scheduler_idle_sleep():
    found = settings()
    assert found and all(re.fullmatch(r"AIRFLOW__[A-Z0-9_]+__[A-Z0-9_]+", key) for key in found), found
    assert all(value == value.strip() and value[:1] not in "'\"" for value in found.values()), found
    assert float(found[IDLE_SLEEP]) < 1  # Airflow's default, 1 s, is paid at every step of a run


def test_scripts_airflow_sh_exports_them_unless_the_environment_sets_them(tmp_path):
    def exported(**extra: str) -> str:
        result = subprocess.run([str(AIRFLOW_SH), "env"], env=clean_env(AIRFLOW_HOME=str(tmp_path), **extra),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = exported()
    for key, value in settings().items():
        assert f"export {key}={value}\n" in listed
    assert f"export {IDLE_SLEEP}=3\n" in exported(**{IDLE_SLEEP: "3"})


@pytest.fixture()
def fake_airflow(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "airflow"
    stand_in.write_text('#!/bin/sh\necho "args: $*"\nenv | grep "^AIRFLOW__" | sort\n')
    stand_in.chmod(0o755)
    return bin_dir


def entrypoint(fake_airflow: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(**{"PATH": f"{fake_airflow}:{os.environ['PATH']}", "CLUSTERFLOW_AIRFLOW_SETTINGS": str(SETTINGS),
                       **extra})
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30)


def test_the_image_entrypoint_exports_them_unless_the_environment_sets_them(fake_airflow):
    started = entrypoint(fake_airflow, "scheduler")
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("args: scheduler\n")
    for key, value in settings().items():
        assert f"{key}={value}\n" in started.stdout
    overridden = entrypoint(fake_airflow, "scheduler", **{IDLE_SLEEP: "3"})
    assert f"{IDLE_SLEEP}=3\n" in overridden.stdout


def test_the_image_entrypoint_refuses_a_malformed_line(fake_airflow, tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("# comment\n\nnot a key=1\n")
    result = entrypoint(fake_airflow, "scheduler", CLUSTERFLOW_AIRFLOW_SETTINGS=str(bad))
    assert result.returncode == 2 and "not KEY=VALUE: not a key=1" in result.stderr
    assert "args:" not in result.stdout


def test_the_image_puts_the_file_where_the_entrypoint_reads_it():
    default = re.search(r"CLUSTERFLOW_AIRFLOW_SETTINGS:-([^}]+)\}", ENTRYPOINT.read_text()).group(1)
    assert f"COPY orchestration/airflow/settings.env {default}\n" in DOCKERFILE.read_text()
