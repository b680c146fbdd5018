"""scripts/stack-env.sh without a stack: the secrets go to files only (never into .env), with modes
that keep other host users out, are kept across calls, an older .env's secret is moved out, git
never sees them, and a missing Docker socket is one line; a digests file given (DIGESTS) is
checked and copied for the stack's read-only mount, a bad one or a bad CLUSTERFLOW_REGISTRY is one
line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.registry import PUBLISHED_IMAGES
from tests.stack.conftest import REPO, SECRET_NAMES

SCRIPT = REPO / "scripts/stack-env.sh"


def stack_env(env_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), str(env_file)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "STACK_IMAGES": "", "DIGESTS": "", "CLUSTERFLOW_REGISTRY": "", **env})


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


def test_a_missing_secret_is_added_and_the_others_are_kept(tmp_path: Path):
    env_file = tmp_path / ".env"
    assert stack_env(env_file).returncode == 0
    secrets = tmp_path / ".env.secrets"
    before = {name: (secrets / name).read_text() for name in SECRET_NAMES}
    (secrets / "redis_password").unlink()
    (secrets / "airflow_fernet_key").write_text("the operator's own key")
    assert stack_env(env_file).returncode == 0
    after = {name: (secrets / name).read_text() for name in SECRET_NAMES}
    assert len(after["redis_password"]) >= 43 and after["redis_password"] != before["redis_password"]
    assert after["airflow_fernet_key"] == "the operator's own key"  # never overwritten
    assert {k: v for k, v in after.items() if k not in ("redis_password", "airflow_fernet_key")} == \
        {k: v for k, v in before.items() if k not in ("redis_password", "airflow_fernet_key")}
    assert stat.S_IMODE((secrets / "redis_password").stat().st_mode) == 0o644


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
        f"stack-env: no Docker socket at {tmp_path / 'missing.sock'}: "
        "start the engine or set DOCKER_SOCKET to its socket"]
    assert list(tmp_path.iterdir()) == []


def digests_file(path: Path, registry: str = "127.0.0.1:5000") -> Path:
    """A digests file as `make publish` writes one (images/digests.json's format)."""
    images = {name: f"{registry}/clusterflow/{name}@sha256:{str(i) * 64}" for i, name in enumerate(PUBLISHED_IMAGES)}
    path.write_text(json.dumps({"registry": registry, "version": "0.1.0", "commit": "c" * 40, "images": images}))
    return path


def settings(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#")


def test_a_digests_file_is_copied_for_a_read_only_mount_until_the_next_call(tmp_path: Path):
    env_file, given = tmp_path / ".env", digests_file(tmp_path / "digests.json")
    done = stack_env(env_file, DIGESTS=str(given), CLUSTERFLOW_REGISTRY="127.0.0.1:5000")
    assert done.returncode == 0, done.stderr
    copy = tmp_path / ".env.pins/digests.json"
    assert copy.read_bytes() == given.read_bytes() and stat.S_IMODE(copy.stat().st_mode) == 0o644
    found = settings(env_file)
    assert found["CLUSTERFLOW_DIGESTS_FILE"] == str(copy)
    assert found["CLUSTERFLOW_DIGESTS"] == "/run/clusterflow/digests.json"
    assert found["CLUSTERFLOW_REGISTRY"] == "127.0.0.1:5000"

    given.write_text("{}")  # a later publish changes nothing until the next call
    assert copy.read_bytes() != given.read_bytes()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    given.unlink()
    listed = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert listed.split() == ["??", ".env"], listed

    assert stack_env(env_file).returncode == 0  # no DIGESTS: local images again, no pins left
    found = settings(env_file)
    assert "CLUSTERFLOW_DIGESTS" not in found and "CLUSTERFLOW_DIGESTS_FILE" not in found
    assert found["CLUSTERFLOW_REGISTRY"] == "" and not (tmp_path / ".env.pins").exists()


@pytest.mark.parametrize("setting, value, problem", [
    ("DIGESTS", "{}", 'expected {"registry", "version", "commit", "images": {name: reference}}'),
    ("DIGESTS", "missing", "No such file or directory"),
    ("DIGESTS", "other-registry", "is not 127.0.0.1:5000/clusterflow/core@sha256:..."),
    ("CLUSTERFLOW_REGISTRY", "http://127.0.0.1:5000", "give HOST:PORT or a domain"),
])
def test_a_bad_digests_file_or_registry_is_one_line_and_changes_nothing(tmp_path: Path, setting: str, value: str,
                                                                       problem: str):
    env_file = tmp_path / ".env"
    assert stack_env(env_file).returncode == 0
    before = env_file.read_text()
    if setting == "DIGESTS" and value == "{}":
        (tmp_path / "bad.json").write_text(value)
        value = str(tmp_path / "bad.json")
    elif value == "other-registry":
        good = json.loads(digests_file(tmp_path / "good.json").read_text())
        good["images"]["core"] = good["images"]["core"].replace("127.0.0.1:5000", "evil.example:443")
        (tmp_path / "bad.json").write_text(json.dumps(good))
        value = str(tmp_path / "bad.json")
    elif value == "missing":
        value = str(tmp_path / "missing.json")
    done = stack_env(env_file, **{setting: value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stack-env: {setting}: ") and problem in lines[0], done.stderr
    assert env_file.read_text() == before and not (tmp_path / ".env.pins").exists()
