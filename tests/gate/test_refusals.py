"""Requests the gate refuses, sent through the real gate server to a recording fake engine:
each gets its status and a JSON message naming the rule, and none reaches the engine."""

from __future__ import annotations

import copy
import json
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import h11
import pytest

# A step container's create body as the local runner sends it (captured with a recording engine),
# with the data root at DATA; each case below changes one thing.
DATA = "@DATA@"
STEP = {
    "User": "10001:10001", "Tty": False, "OpenStdin": False, "StdinOnce": False, "AttachStdin": False,
    "AttachStdout": True, "AttachStderr": True,
    "Env": ["CLUSTERFLOW_IMAGE=clusterflow/prepare:0.1.0", "CLUSTERFLOW_IMAGE_DIGEST=sha256:" + "a" * 64],
    "Cmd": ["--run-id", "r1", "--dataset", "digits", "--seed", "0", "--cache"],
    "Image": "clusterflow/prepare:0.1.0", "NetworkDisabled": False,
    "HostConfig": {
        "Memory": 2 << 30, "ReadonlyRootfs": True, "NetworkMode": "none", "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"], "Tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=512m"},
        "PidsLimit": 256, "NanoCpus": 2_000_000_000,
        "Mounts": [{"Target": "/data", "Source": DATA, "Type": "bind", "ReadOnly": False},
                   {"Target": "/data/cache", "Source": DATA + "/cache", "Type": "bind", "ReadOnly": True}]},
    "Labels": {"io.clusterflow.dag_id": "local", "io.clusterflow.run_id": "r1",
               "io.clusterflow.task_id": "prepare", "io.clusterflow.try_number": "1"},
}


def changed(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """STEP with one key (``HostConfig.Privileged``) set, or deleted."""
    body = copy.deepcopy(STEP)
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    if delete:
        del target[last]
    else:
        target[last] = value
    return body


def input_mount(source: str, target: str = "/input/points.csv", **extra: Any) -> dict[str, Any]:
    mounts = [*STEP["HostConfig"]["Mounts"], {"Target": target, "Source": source, "Type": "bind",
                                               "ReadOnly": True, **extra}]
    return changed("HostConfig.Mounts", mounts)


def raw(url: str, method: str, path: str, body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, Any]]:
    """Send one request as these exact bytes; the status and the JSON answer."""
    port = urllib.parse.urlsplit(url).port
    head = [("Host", "gate"), *(headers or [])]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in head):
        head.append(("Content-Length", str(len(body))))
    data = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in head) + b"\r\n" + (body or b"")
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        conn.send(h11.Request(method=method, target=path, headers=[("Host", "gate")]))  # h11 tracks the state
        conn.send(h11.EndOfMessage())
        chunks, response = [], None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            else:
                break
    return response.status_code, json.loads(b"".join(chunks) or b"{}")


def create(body: Any) -> tuple[str, str, bytes]:
    text = body if isinstance(body, str) else json.dumps(body)
    return "POST", "/v1.41/containers/create", text.encode()


def device(path: str) -> list[dict[str, str]]:
    return [{"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"}]


DUPLICATE_HOST_CONFIG = json.dumps(STEP)[:-1] + ', "HostConfig": {"Privileged": true}}'
# name, (method, path, body), extra headers, status, words of the rule
CASES: list[tuple[str, tuple[str, str, bytes | None], list[tuple[str, str]], int, str]] = [
    # docker run --privileged -u 0 -v /:/host --pid host --network host --cap-add ALL --device /dev/sda
    ("privileged", create(changed("HostConfig.Privileged", True)), [], 403, "HostConfig.Privileged"),
    ("user 0", create(changed("User", "0")), [], 403, "User '0'"),
    ("root user by name", create(changed("User", "root")), [], 403, "User 'root'"),
    ("bind / at /host", create(changed("HostConfig.Binds", ["/:/host"])), [], 403, "HostConfig.Binds"),
    ("mount / at /host", create(input_mount("/", "/host")), [], 403, "mount at '/host'"),
    ("pid host", create(changed("HostConfig.PidMode", "host")), [], 403, "HostConfig.PidMode"),
    ("network host", create(changed("HostConfig.NetworkMode", "host")), [], 403, "HostConfig.NetworkMode"),
    ("cap-add ALL", create(changed("HostConfig.CapAdd", ["ALL"])), [], 403, "HostConfig.CapAdd"),
    ("device /dev/sda", create(changed("HostConfig.Devices", device("/dev/sda"))), [], 403, "HostConfig.Devices"),
    ("ipc host", create(changed("HostConfig.IpcMode", "host")), [], 403, "HostConfig.IpcMode"),
    ("uts host", create(changed("HostConfig.UTSMode", "host")), [], 403, "HostConfig.UTSMode"),
    ("userns host", create(changed("HostConfig.UsernsMode", "host")), [], 403, "HostConfig.UsernsMode"),
    ("cgroupns host", create(changed("HostConfig.CgroupnsMode", "host")), [], 403, "HostConfig.CgroupnsMode"),
    ("gpus", create(changed("HostConfig.DeviceRequests", [{"Count": -1, "Capabilities": [["gpu"]]}])), [], 403,
     "HostConfig.DeviceRequests"),
    ("device cgroup rule", create(changed("HostConfig.DeviceCgroupRules", ["b 8:* rwm"])), [], 403,
     "HostConfig.DeviceCgroupRules"),
    ("volumes from", create(changed("HostConfig.VolumesFrom", ["airflow-scheduler"])), [], 403,
     "HostConfig.VolumesFrom"),
    ("sysctls", create(changed("HostConfig.Sysctls", {"kernel.core_pattern": "|/x"})), [], 403, "HostConfig.Sysctls"),
    ("runtime", create(changed("HostConfig.Runtime", "runc-unsafe")), [], 403, "HostConfig.Runtime"),
    ("seccomp unconfined", create(changed("HostConfig.SecurityOpt", ["no-new-privileges", "seccomp=unconfined"])),
     [], 403, "HostConfig.SecurityOpt"),
    ("extra hosts", create(changed("HostConfig.ExtraHosts", ["db:10.0.0.1"])), [], 403, "HostConfig.ExtraHosts"),
    ("port bindings", create(changed("HostConfig.PortBindings", {"80/tcp": [{"HostPort": "80"}]})), [], 403,
     "HostConfig.PortBindings"),
    ("unmasked /proc", create(changed("HostConfig.MaskedPaths", [])), [], 403, "HostConfig.MaskedPaths"),
    ("writable root", create(changed("HostConfig.ReadonlyRootfs", False)), [], 403, "HostConfig.ReadonlyRootfs"),
    ("capabilities kept", create(changed("HostConfig.CapDrop", delete=True)), [], 403, "HostConfig.CapDrop missing"),
    ("no pids limit", create(changed("HostConfig.PidsLimit", -1)), [], 403, "HostConfig.PidsLimit"),
    ("memory over the cap", create(changed("HostConfig.Memory", 3 << 30)), [], 403, "HostConfig.Memory"),
    ("no CPU limit", create(changed("HostConfig.NanoCpus", delete=True)), [], 403, "HostConfig.NanoCpus"),
    ("cgroup parent", create(changed("HostConfig.CgroupParent", "/")), [], 403, "HostConfig.CgroupParent"),
    # case tricks: the engine's decoder would take these as Privileged / HostConfig
    ('"privileged": true', create(changed("HostConfig.privileged", True)), [], 403,
     "the engine spells it 'Privileged'"),
    ('"hostconfig"', create(changed("hostconfig", {"Privileged": True})), [], 403, "the engine spells it 'HostConfig'"),
    ("Kelvin-sign spelling", create(changed("HostConfig.\u212aernelMemory", 1)), [], 403, "the engine spells it"),
    ("duplicate HostConfig", create(DUPLICATE_HOST_CONFIG), [], 400, "duplicate key 'HostConfig'"),
    ("unknown key", create(changed("Sneaky", 1)), [], 403, "Sneaky: unknown key"),
    ("unknown host config key", create(changed("HostConfig.Sneaky", 1)), [], 403, "HostConfig.Sneaky: unknown key"),
    ("entrypoint override", create(changed("Entrypoint", ["/bin/sh", "-c"])), [], 403, "Entrypoint"),
    ("env beyond the step's", create(changed("Env", ["LD_PRELOAD=/data/x.so"])), [], 403, "Env 'LD_PRELOAD'"),
    ("label outside io.clusterflow", create(changed("Labels.app", "x")), [], 403, "label 'app'"),
    ("no clusterflow labels", create(changed("Labels", {})), [], 403, "label io.clusterflow.dag_id missing"),
    ("too many args", create(changed("Cmd", ["x"] * 65)), [], 403, "Cmd must be a list of at most 64"),
    ("non-clusterflow image", create(changed("Image", "alpine:3.20")), [], 403, "not a clusterflow step image"),
    ("look-alike repository", create(changed("Image", "evil/clusterflow/prepare:0.1.0")), [], 403,
     "not a clusterflow step image"),
    ("not a step", create(changed("Image", "clusterflow/airflow:0.1.0")), [], 403, "not a clusterflow step image"),
    ("wrong tag", create(changed("Image", "clusterflow/prepare:latest")), [], 403, "only the tag 0.1.0"),
    ("volume driver options", create(changed("HostConfig.Mounts", [
        {**STEP["HostConfig"]["Mounts"][0], "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {
            "type": "none", "o": "bind", "device": "/"}}}}, STEP["HostConfig"]["Mounts"][1]])), [], 403,
     "HostConfig.Mounts: VolumeOptions"),
    ("data root elsewhere", create(changed("HostConfig.Mounts", [
        {**STEP["HostConfig"]["Mounts"][0], "Source": "/etc"}, STEP["HostConfig"]["Mounts"][1]])), [], 403,
     "mount at '/data'"),
    ("cache writable by a step", create(changed("HostConfig.Mounts", [
        STEP["HostConfig"]["Mounts"][0], {**STEP["HostConfig"]["Mounts"][1], "ReadOnly": False}])), [], 403,
     "mount at '/data/cache'"),
    ("input outside the allow-list", create(input_mount("/etc/shadow")), [], 403, "not under CLUSTERFLOW_INPUT_DIRS"),
    ("writable input", create(input_mount("@INPUTS@/points.csv", ReadOnly=False)), [], 403, "one read-only bind"),
    ("input through a symlink out", create(input_mount("@INPUTS@/escape")), [], 403,
     "not under CLUSTERFLOW_INPUT_DIRS"),
    ("input that is a socket", create(input_mount("@INPUTS@/docker.sock")), [], 403, "not a regular file"),
    ("NaN", create(json.dumps(STEP).replace('"PidsLimit": 256', '"PidsLimit": NaN')), [], 400, "NaN is not JSON"),
    ("non-JSON", ("POST", "/containers/create", b"Privileged=1"), [], 400, "not JSON"),
    ("empty JSON", ("POST", "/containers/create", b" "), [], 400, "not JSON"),
    ("oversize", create(json.dumps(STEP) + " " * 70_000), [], 413, "over 65536 bytes"),
    ("chunked", ("POST", "/containers/create", b"5\r\n{\"a\":\r\n0\r\n\r\n"),
     [("Transfer-Encoding", "chunked")], 411, "chunked"),
    ("Content-Length 0", ("POST", "/containers/create", b""), [], 411, "Content-Length: 0"),
    ("missing body", ("POST", "/containers/create", None), [], 411, "needs a Content-Length"),
    ("not a clusterflow name", ("POST", "/containers/create?name=airflow-worker", json.dumps(STEP).encode()),
     [], 403, "name query"),
    # endpoints a step launch never needs
    ("exec", ("POST", "/v1.41/containers/cfid0001/exec", b"{}"), [], 403, "/exec is not a step container call"),
    ("archive get", ("GET", "/containers/cfid0001/archive?path=/", None), [], 403, "/archive"),
    ("archive put", ("PUT", "/containers/cfid0001/archive?path=/", b"x"), [], 403, "/archive"),
    ("export", ("GET", "/containers/cfid0001/export", None), [], 403, "/export"),
    ("update", ("POST", "/containers/cfid0001/update", b"{}"), [], 403, "/update"),
    ("list containers", ("GET", "/containers/json?all=1", None), [], 403, "GET /containers/json"),
    ("pull", ("POST", "/images/create?fromImage=alpine", None), [], 403, "pulling images is not allowed"),
    ("build", ("POST", "/build", b"x"), [], 403, "POST /build"),
    ("volumes", ("GET", "/volumes", None), [], 403, "GET /volumes"),
    ("create a volume", ("POST", "/volumes/create", b"{}"), [], 403, "POST /volumes/create"),
    ("networks", ("GET", "/networks", None), [], 403, "GET /networks"),
    ("swarm", ("GET", "/swarm", None), [], 403, "GET /swarm"),
    ("services", ("POST", "/services/create", b"{}"), [], 403, "POST /services/create"),
    ("events", ("GET", "/events", None), [], 403, "GET /events"),
    ("info", ("GET", "/info", None), [], 403, "GET /info"),
    ("plugins", ("GET", "/plugins", None), [], 403, "GET /plugins"),
    ("secrets", ("GET", "/secrets", None), [], 403, "GET /secrets"),
    ("list every image", ("GET", "/images/json", None), [], 403, "reference filter"),
    ("list other images", ("GET", "/images/json?filters=" + urllib.parse.quote('{"reference":["alpine"]}'), None),
     [], 403, "reference filter"),
    ("inspect another image", ("GET", "/images/alpine:3.20/json", None), [], 403, "not a clusterflow step image"),
    ("old API start with a host config", ("POST", "/v1.23/containers/cfid0001/start", b'{"Privileged":true}'), [],
     403, "older than 1.24"),
    ("start with a body", ("POST", "/containers/cfid0001/start", b'{"Privileged":true}'), [], 400,
     "only POST /containers/create takes a request body"),
    ("delete a link", ("DELETE", "/containers/cfid0001?link=1", None), [], 403, "query parameter link"),
    ("path tricks", ("GET", "/containers/cfid0001/json/../../../info", None), [], 403, "is not a step container call"),
]
# Per-container calls on a container without the clusterflow labels: the gate asks the engine
# (an inspect) and refuses; the call itself never reaches it.
OTHER = [
    ("start another", ("POST", "/containers/other/start", None)),
    ("inspect another (its env)", ("GET", "/containers/other/json", None)),
    ("logs of another", ("GET", "/containers/other/logs?stdout=1", None)),
    ("stop another", ("POST", "/containers/other/stop", None)),
    ("kill another", ("POST", "/containers/other/kill", None)),
    ("attach to another", ("POST", "/containers/other/attach?stream=1&stdout=1", None)),
    ("wait on another", ("POST", "/containers/other/wait", None)),
    ("remove another", ("DELETE", "/containers/other?force=1", None)),
]


def pull(from_image: str, tag: str, **extra: str) -> tuple[str, str, None]:
    query = urllib.parse.urlencode({"fromImage": from_image, "tag": tag, **extra})
    return "POST", "/v1.41/images/create?" + query, None


P = "127.0.0.1:5000/clusterflow/prepare"  # the registry of the pinned and registry gates
PINNED = "sha256:" + "3" * 64  # prepare's digest in their digests file (tests/gate/conftest.py)
OTHER_DIGEST = "sha256:" + "9" * 64
# Image rules with pins (the gate's fixture), each: name, fixture, request, headers, status, rule
IMAGE_CASES: list[tuple[str, str, tuple[str, str, bytes | None], list[tuple[str, str]], int, str]] = [
    ("a tag where pins are set", "pinned_gate", create(changed("Image", "clusterflow/prepare:0.1.0")), [], 403,
     "only the step images pinned by CLUSTERFLOW_DIGESTS"),
    ("the registry's tag where pins are set", "pinned_gate", create(changed("Image", f"{P}:0.1.0")), [], 403,
     "only the step images pinned"),
    ("another digest of a pinned step", "pinned_gate", create(changed("Image", f"{P}@{OTHER_DIGEST}")), [], 403,
     "only the step images pinned"),
    ("another step's pinned digest", "pinned_gate",
     create(changed("Image", f"127.0.0.1:5000/clusterflow/cluster@{PINNED}")), [], 403, "only the step images pinned"),
    ("pull of an unpinned digest", "pinned_gate", pull(P, OTHER_DIGEST), [], 403,
     "only the step images pinned by CLUSTERFLOW_DIGESTS, by their digests"),
    ("pull by tag", "pinned_gate", pull(P, "0.1.0"), [], 403, "only the step images pinned"),
    ("pull of the pinned digest from another registry", "pinned_gate",
     pull("evil.example.org/clusterflow/prepare", PINNED), [], 403, "only the step images pinned"),
    ("pull of another image", "pinned_gate", pull("alpine", "latest"), [], 403, "only the step images pinned"),
    ("pull with a platform", "pinned_gate", pull(P, PINNED, platform="linux/arm64"), [], 403,
     "takes exactly fromImage="),
    ("import (fromSrc)", "pinned_gate", ("POST", "/images/create?fromSrc=-&repo=" + P, b"tar"), [], 403,
     "takes exactly fromImage="),
    ("import from a URL", "pinned_gate", ("POST", "/images/create?" + urllib.parse.urlencode(
        {"fromSrc": "http://evil/x.tar", "repo": P, "tag": PINNED}), None), [], 403, "takes exactly fromImage="),
    ("pull with credentials", "pinned_gate", pull(P, PINNED), [("X-Registry-Auth", "eyJ1c2VybmFtZSI6ImEifQ==")],
     403, "X-Registry-Auth: the gate passes no registry credentials"),
    ("pull with a body", "pinned_gate", ("POST", "/images/create?fromImage=" + P + "&tag=" + PINNED, b"x"), [], 400,
     "only POST /containers/create takes a request body"),
    ("distribution with pins", "pinned_gate", ("GET", f"/v1.41/distribution/{P}:0.1.0/json", None), [], 403,
     "GET /distribution: only with CLUSTERFLOW_REGISTRY and no digests file"),
    ("a tag with a registry", "registry_gate", create(changed("Image", f"{P}:0.1.0")), [], 403,
     "only 127.0.0.1:5000/clusterflow/<step>@sha256:<digest>, never a tag"),
    ("a local image with a registry", "registry_gate", create(changed("Image", "clusterflow/prepare:0.1.0")), [],
     403, "never a tag"),
    ("another registry's digest", "registry_gate",
     create(changed("Image", f"127.0.0.2:5000/clusterflow/prepare@{PINNED}")), [], 403, "never a tag"),
    ("pull by tag from the registry", "registry_gate", pull(P, "0.1.0"), [], 403,
     "only 127.0.0.1:5000/clusterflow/<step>@sha256:<digest>"),
    ("pull from another registry", "registry_gate", pull("127.0.0.2:5000/clusterflow/prepare", PINNED), [], 403,
     "only 127.0.0.1:5000/clusterflow/<step>@sha256:<digest>"),
    ("pull of a non-step image", "registry_gate", pull("127.0.0.1:5000/clusterflow/airflow", PINNED), [], 403,
     "only 127.0.0.1:5000/clusterflow/<step>@sha256:<digest>"),
    ("distribution of another registry", "registry_gate",
     ("GET", "/distribution/127.0.0.2:5000/clusterflow/prepare:0.1.0/json", None), [], 403,
     "only 127.0.0.1:5000/clusterflow/<step>:0.1.0"),
    ("distribution of another tag", "registry_gate", ("GET", f"/distribution/{P}:latest/json", None), [], 403,
     "only 127.0.0.1:5000/clusterflow/<step>:0.1.0"),
    ("distribution of a non-step image", "registry_gate",
     ("GET", "/distribution/127.0.0.1:5000/clusterflow/airflow:0.1.0/json", None), [], 403, "only 127.0.0.1:5000"),
    ("distribution without a registry", "gate", ("GET", f"/distribution/{P}:0.1.0/json", None), [], 403,
     "only with CLUSTERFLOW_REGISTRY"),
    ("pull of a digest without pins", "gate", pull(P, PINNED), [], 403, "pulling images is not allowed"),
]


@pytest.mark.parametrize("name, fixture, request_, headers, status, rule", IMAGE_CASES,
                         ids=[c[0] for c in IMAGE_CASES])
def test_image_rules_refuse_and_nothing_reaches_the_engine(request: pytest.FixtureRequest, fake_docker: Any,
                                                           data_root: Path, name: str, fixture: str, request_: tuple,
                                                           headers: list, status: int, rule: str) -> None:
    url = request.getfixturevalue(fixture)
    method, path, body = request_
    if body is not None:
        body = body.replace(DATA.encode(), str(data_root).encode())
    got, answer = raw(url, method, path, body, headers)
    assert (got, fake_docker.requests) == (status, [])
    assert answer["message"].startswith("clusterflow launch gate: ") and rule in answer["message"], answer


def test_the_table_has_at_least_30_refused_requests() -> None:
    assert len(CASES) + len(OTHER) >= 30


@pytest.fixture
def planted(inputs: Path, tmp_path: Path) -> Path:
    """In the allowed input directory: a symlink out of it and a unix socket."""
    (inputs / "escape").symlink_to("/etc/passwd")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inputs / "docker.sock"))
    yield inputs
    server.close()


@pytest.mark.parametrize("name, request_, headers, status, rule", CASES, ids=[c[0] for c in CASES])
def test_refused_and_nothing_reaches_the_engine(gate: str, fake_docker: Any, data_root: Path, planted: Path, name: str,
                                                request_: tuple, headers: list, status: int, rule: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    method, path, body = request_
    if body is not None:
        body = body.replace(DATA.encode(), str(data_root).encode()).replace(b"@INPUTS@", str(planted).encode())
    got, answer = raw(gate, method, path, body, headers)
    assert (got, fake_docker.requests) == (status, [])
    assert answer["message"].startswith("clusterflow launch gate: ") and rule in answer["message"], answer
    refusals = [r.getMessage() for r in caplog.records if r.name == "clusterflow.gate"]
    assert len(refusals) == 1 and refusals[0].startswith(f"refused {method} ") and rule in refusals[0]


@pytest.mark.parametrize("name, request_", OTHER, ids=[c[0] for c in OTHER])
def test_calls_on_a_container_without_the_clusterflow_labels_are_refused(gate: str, fake_docker: Any, name: str,
                                                                         request_: tuple) -> None:
    method, path, body = request_
    got, answer = raw(gate, method, path, body)
    assert got == 403 and "not a clusterflow step container" in answer["message"]
    assert [(r["method"], r["path"]) for r in fake_docker.requests] == [("GET", "/v1.41/containers/other/json")]


def test_a_refusal_leaves_the_connection_usable(gate: str, fake_docker: Any) -> None:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(gate).port, timeout=10)
    conn.request("POST", "/containers/cfid0001/exec", body=b"{}")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())["message"]) == (
        403, "clusterflow launch gate: POST /containers/<id>/exec is not a step container call")
    conn.request("GET", "/_ping")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"OK")
