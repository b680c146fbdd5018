"""scripts/engine.sh: an extra engine that leaves the main one, and the machine, as they were."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.engines import engine_sh, on

pytestmark = [pytest.mark.container, pytest.mark.root]  # it starts dockerd itself


def bridge_networks() -> dict[str, ipaddress.IPv4Network]:
    """Every IPv4 network on this machine's interfaces, by interface name."""
    found = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True,
                                      check=True).stdout)
    return {link["ifname"]: ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            for link in found for a in link.get("addr_info", [])}


def mounts_under(directory: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(f"{directory}/")]


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout, result
    assert all(word in result.stderr for word in words), result.stderr


def test_engines_get_bridges_that_clash_with_nothing(ci_engine: str, worker_engine: str) -> None:
    networks = bridge_networks()
    ours = {name: net for name, net in networks.items() if name.startswith("cf-")}
    assert len(ours) >= 2
    for name, net in ours.items():
        assert net.subnet_of(ipaddress.ip_network("172.31.0.0/16")), (name, net)
        assert not [other for other, n in networks.items() if other != name and n.overlaps(net)], networks
    for host in (ci_engine, worker_engine):
        info = json.loads(on(host, "network", "inspect", "bridge").stdout)[0]
        assert info["Options"]["com.docker.network.bridge.name"].startswith("cf-"), info


def test_start_refuses_what_is_in_use_and_stop_leaves_nothing(tmp_path: Path) -> None:
    name = f"t{os.getpid()}"
    first = engine_sh("start", str(tmp_path / "one"), name)
    assert first.returncode == 0, first.stderr
    try:
        assert first.stdout.strip() == f"unix://{tmp_path}/one/docker.sock"
        ran = on(first.stdout.strip(), "info", "--format", "{{.Images}} {{.DockerRootDir}}")
        assert ran.stdout.split() == ["0", f"{tmp_path}/one/data"], ran
        refused(engine_sh("start", str(tmp_path / "two"), name), f"cf-{name}", "in use")
        refused(engine_sh("start", str(tmp_path / "one"), f"u{os.getpid()}"), "still runs", "stop")
        assert not (tmp_path / "two").exists()
    finally:
        stopped = engine_sh("stop", str(tmp_path / "one"))
    assert stopped.returncode == 0, stopped.stderr
    assert list((tmp_path / "one").iterdir()) == [] and mounts_under(tmp_path) == []
    assert f"cf-{name}" not in bridge_networks()
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).returncode == 1


def test_start_refuses_bad_names_and_the_main_engines_paths(tmp_path: Path) -> None:
    refused(engine_sh("start", str(tmp_path / "e"), "a" * 13), "at most 15 characters")
    refused(engine_sh("start", str(tmp_path / "e"), "Bad_Name"), "lowercase")
    (tmp_path / "link").symlink_to("/var/lib/docker")
    refused(engine_sh("start", str(tmp_path / "link"), "x"), "main engine")
    refused(engine_sh("start", "/var/run/docker", "x"), "main engine")
    refused(engine_sh("start", str(tmp_path / ("d" * 90)), "x"), "too long")
    refused(engine_sh("stop", str(tmp_path)), "no engine")
    refused(engine_sh("start", str(tmp_path / "e")), "usage")
    assert not (tmp_path / "e").exists() and not [n for n in bridge_networks() if n in ("cf-x", "cf-" + "a" * 13)]
