"""scripts/stack-env.sh without a stack: the secrets go to files only (never into .env), with modes
that keep other host users out, are kept across calls, an older .env's secret is moved out, git
never sees them, and a missing Docker socket is one line."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.stack.conftest import REPO, SECRET_NAMES

SCRIPT = REPO / "scripts/stack-env.sh"


def stack_env(env_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), str(env_file)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "STACK_IMAGES": "", **env})


def test_secrets_are_files_only_kept_across_calls_and_private(tmp_path: Path):
    env_file = tmp_path / ".env"
    assert stack_env(env_file).returncode == 0
    secrets = tmp_path / ".env.secrets"
    values = {name: (secrets / name).read_text() for name in SECRET_NAMES}
    assert all(len(value) >= 43 for value in values.values()), values.keys()
    assert len(values["airflow_jwt_secret"]) >= 64 and len(values["airflow_api_secret_key"]) >= 64
    text = env_file.read_text()
    assert [name for name, value in values.items() if value in text] == []
    assert f"CLUSTERFLOW_SECRETS_DIR={secrets}\n" in text
    assert f"DOCKER_SOCKET_GID={os.stat('/var/run/docker.sock').st_gid}\n" in text
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert {stat.S_IMODE((secrets / name).stat().st_mode) for name in SECRET_NAMES} == {0o644}

    assert stack_env(env_file).returncode == 0
    assert {name: (secrets / name).read_text() for name in SECRET_NAMES} == values
    assert env_file.read_text() == text

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    listed = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert listed.split() == ["??", ".env"], listed


def test_a_secret_in_an_older_env_moves_into_its_file(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_PASSWORD=kept-from-before\nAIRFLOW_PORT=9090\n"
                        "# --- images: rewritten by stack-env.sh on every call ---\nSOCKET_PROXY_IMAGE=old\n")
    done = stack_env(env_file)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".env.secrets/postgres_password").read_text() == "kept-from-before"
    text = env_file.read_text()
    assert "kept-from-before" not in text and "SOCKET_PROXY_IMAGE" not in text and "AIRFLOW_PORT=9090\n" in text


def test_no_docker_socket_is_one_line_and_writes_nothing(tmp_path: Path):
    done = stack_env(tmp_path / ".env", DOCKER_SOCKET=str(tmp_path / "missing.sock"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"stack-env: no Docker socket at {tmp_path / 'missing.sock'}: start the engine or set DOCKER_SOCKET to its socket"]
    assert list(tmp_path.iterdir()) == []
