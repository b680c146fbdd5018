"""What scripts/registry.sh and scripts/publish.sh refuse (one line, exit 2, nothing started or
pushed), what `registry.sh stop` leaves (nothing), and the --tls registry's certificate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.registry import REPO

pytestmark = pytest.mark.container
REGISTRY_SH = REPO / "scripts" / "registry.sh"


def run(*cmd: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHON": sys.executable})


def assert_refused(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 2, done
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr, done.stderr


def catalog(registry: str) -> dict[str, list[str]]:
    """Every repository of the registry with its tags."""
    def get(path: str):
        with urllib.request.urlopen(f"http://{registry}/v2/{path}", timeout=10) as answer:
            return json.load(answer)
    return {repo: sorted(get(f"{repo}/tags/list")["tags"] or []) for repo in get("_catalog")["repositories"]}


def registries_serving(state: Path) -> list[int]:
    """Pids of docker-registry processes serving a config under ``state``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if "docker-registry" in cmdline and str(state) in cmdline:
            found.append(int(proc.name))
    return found


def listening(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def global_ipv4() -> str:
    """An address of this machine that is not loopback (a non-loopback registry needs --tls)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert "inet" in out, "this machine has no global IPv4 address to test --tls on"
    return out[out.index("inet") + 1].split("/")[0]


@pytest.mark.parametrize("args, says", [
    ((), "give the registry"),
    (("http://127.0.0.1:5000",), "drop the scheme"),
    (("Not_A_Registry",), "without a scheme"),
])
def test_publish_refuses_a_bad_registry(args: tuple[str, ...], says: str, registry: str,
                                        tmp_path: Path) -> None:
    before = catalog(registry)
    output = tmp_path / "digests.json"
    assert_refused(run(REPO / "scripts" / "publish.sh", *args, "--output", output), says)
    assert catalog(registry) == before and not output.exists()


def test_publish_refuses_a_dirty_work_tree(registry: str, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    assert run("git", "clone", "-q", REPO, clone).returncode == 0
    (clone / "VERSION").write_text("9.9.9\n")
    before = catalog(registry)
    output = tmp_path / "digests.json"
    assert_refused(run(clone / "scripts" / "publish.sh", registry, "--output", output, cwd=clone),
                   "uncommitted changes")
    assert catalog(registry) == before and not output.exists()


def test_registry_refuses_a_port_in_use(registry: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert_refused(run(REGISTRY_SH, "start", state, "--addr", registry), "in use")
    assert not state.exists() and registries_serving(state) == []


def test_registry_refuses_a_directory_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert_refused(run(REGISTRY_SH, "start", tmp_path), "not an empty directory")
    assert_refused(run(REGISTRY_SH, "stop", tmp_path), "no registry started by")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and registries_serving(tmp_path) == []


def test_registry_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert_refused(run(REGISTRY_SH, "start", state, "--addr", "10.255.255.1:5000"), "add --tls")
    assert not state.exists()


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    state = tmp_path / "state"
    started = run(REGISTRY_SH, "start", state)
    assert started.returncode == 0, started.stderr
    addr = started.stdout.strip()
    pid = int((state / "registry.pid").read_text())
    assert listening(addr) and registries_serving(state) == [pid]
    stopped = run(REGISTRY_SH, "stop", state)
    assert stopped.returncode == 0, stopped.stderr
    assert registries_serving(state) == [] and not listening(addr)
    assert list(state.iterdir()) == []


def test_tls_registry_is_trusted_only_through_its_certificate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    host = global_ipv4()
    with socket.socket() as s:  # a free port on that address
        s.bind((host, 0))
        port = s.getsockname()[1]
    started = run(REGISTRY_SH, "start", state, "--addr", f"{host}:{port}", "--tls")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"{host}:{port}"
        assert f"/etc/docker/certs.d/{host}:{port}/ca.crt" in started.stderr
        url = f"https://{host}:{port}/v2/"
        assert run("curl", "-fsS", "--cacert", state / "ca.crt", url).returncode == 0
        untrusted = run("curl", "-fsS", url)
        assert untrusted.returncode == 60, untrusted  # curl: peer certificate cannot be authenticated
    finally:
        assert run(REGISTRY_SH, "stop", state).returncode == 0
    assert list(state.iterdir()) == []
