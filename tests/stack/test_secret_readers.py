"""The Airflow image's two readers of the stack's secret files, on their own: clusterflow-secret-url
(what the `_CMD` settings run) fills a URL from /run/secrets, and refuses a secret it cannot read;
the entrypoint writes the admin password file from AIRFLOW_ADMIN_PASSWORD_FILE, and refuses a
missing one. Both refusals are one line saying which secret to give."""

from __future__ import annotations

import subprocess
from pathlib import Path

IMAGE = "clusterflow/airflow:latest"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", *args],
                          capture_output=True, text=True, timeout=120)


def test_secret_url_fills_the_url_quoted_password(stack_images: str, tmp_path: Path):
    (tmp_path / "db_password").write_text("p@ss/w:rd\n")
    done = run("-v", f"{tmp_path / 'db_password'}:/run/secrets/db_password:ro",
               "--entrypoint", "clusterflow-secret-url", IMAGE, "postgresql://airflow:{db_password}@postgres:5432/airflow")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "postgresql://airflow:p%40ss%2Fw%3Ard@postgres:5432/airflow"


def test_secret_url_refuses_a_secret_it_cannot_read(stack_images: str):
    done = run("--entrypoint", "clusterflow-secret-url", IMAGE, "redis://:{redis_password}@redis:6379/0")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "clusterflow-secret-url: cannot read /run/secrets/redis_password (No such file or directory):"
        " give the service that secret"]


def test_the_entrypoint_writes_the_admin_password_file_from_the_secret(stack_images: str, tmp_path: Path):
    (tmp_path / "admin").write_text("s3cret\n")
    done = run("-v", f"{tmp_path / 'admin'}:/run/secrets/admin:ro",
               "-e", "AIRFLOW_ADMIN_PASSWORD_FILE=/run/secrets/admin",
               "-e", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin,viewer:viewer",
               "-e", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=/tmp/passwords.json",
               "--entrypoint", "sh", IMAGE, "-c", "clusterflow-airflow version >/dev/null && cat /tmp/passwords.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"admin": "s3cret", "viewer": "s3cret"}'


def test_the_entrypoint_refuses_a_missing_admin_password_file(stack_images: str):
    done = run("-e", "AIRFLOW_ADMIN_PASSWORD_FILE=/run/secrets/airflow_admin_password", IMAGE, "version")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "clusterflow-airflow: cannot read AIRFLOW_ADMIN_PASSWORD_FILE=/run/secrets/airflow_admin_password"
        " (No such file or directory): give the service the airflow_admin_password secret"]
