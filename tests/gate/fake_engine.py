"""A recording fake Docker engine on a unix socket: answers what a step launch needs and records
every request it gets, so a test can assert that a refused request never reached an engine.

Runs in-process (a thread) or as a script: ``python fake_engine.py SOCKET RECORD.jsonl`` (the
Airflow venv's capture of DockerOperator's bodies).
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

STEP_LABELS = {"io.clusterflow.dag_id": "local", "io.clusterflow.run_id": "r1",
               "io.clusterflow.task_id": "prepare", "io.clusterflow.try_number": "1"}
# containers the fake engine knows: name -> labels
CONTAINERS = {"clusterflow.r1.prepare": STEP_LABELS, "cfid0001": STEP_LABELS, "other": {"app": "db"}}


PULL_PROGRESS = [{"status": "Pulling from clusterflow/prepare", "id": "sha256"},
                 {"status": "Digest: sha256:" + "1" * 64}, {"status": "Status: Downloaded newer image"}]
DISTRIBUTION_DIGEST = "sha256:" + "d" * 64


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str):
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(path, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Engine

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def _reply(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Api-Version", "1.41")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        with self.server.lock:
            self.server.requests.append({"method": self.command, "path": url.path, "query": url.query,
                                         "headers": dict(self.headers.items()), "body": body.decode()})
        path = url.path.split("/", 2)[2] if url.path.startswith("/v1.") else url.path.lstrip("/")
        parts = path.split("/")
        if parts[0] == "_ping":
            return self._reply(200, b"OK", "text/plain")
        if parts[0] == "version":
            return self._reply(200, {"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.24"})
        if parts[:2] == ["containers", "create"]:
            return self._reply(201, {"Id": "cfid0001", "Warnings": []})
        if parts[0] == "containers" and len(parts) >= 2:
            name = urllib.parse.unquote(parts[1])
            if name not in CONTAINERS:
                return self._reply(404, {"message": f"No such container: {name}"})
            action = parts[2] if len(parts) > 2 else ""
            if action == "json":
                return self._reply(200, {"Id": "cfid0001" if name != "other" else "otherid",
                                         "Name": "/" + name, "Config": {"Labels": CONTAINERS[name], "Tty": False},
                                         "State": {"Running": False}})
            if action == "attach":
                self.send_response(101)
                self.send_header("Content-Type", "application/vnd.docker.raw-stream")
                self.send_header("Connection", "Upgrade")
                self.send_header("Upgrade", "tcp")
                self.end_headers()
                time.sleep(0.1)  # output comes once the container runs, as on a real engine
                self.wfile.write(b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n")
                self.close_connection = True
                return None
            if action == "wait":
                return self._reply(200, {"StatusCode": 0, "Error": None})
            if action == "logs":
                return self._reply(200, b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n",
                                   "application/vnd.docker.multiplexed-stream")
            return self._reply(204)
        if parts[:2] == ["images", "create"]:  # a pull: the engine's JSON progress stream, chunked as it comes
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in PULL_PROGRESS:
                data = json.dumps(line).encode() + b"\r\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
            return None
        if parts[0] == "distribution":
            return self._reply(200, {"Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                                    "digest": DISTRIBUTION_DIGEST, "size": 1993}, "Platforms": []})
        if parts[:2] == ["images", "json"]:
            return self._reply(200, [{"Id": "sha256:" + "a" * 64, "RepoTags": ["clusterflow/prepare:0.1.0"]}])
        if parts[0] == "images":
            return self._reply(200, {"Id": "sha256:" + "a" * 64, "RepoTags": ["clusterflow/prepare:0.1.0"],
                                     "RepoDigests": []})
        return self._reply(404, {"message": "page not found"})

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _handle


def start(path: str | Path) -> Engine:
    engine = Engine(str(path))
    threading.Thread(target=engine.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return engine


if __name__ == "__main__":
    engine = start(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()  # until the caller closes stdin
    Path(sys.argv[2]).write_text("".join(json.dumps(r) + "\n" for r in engine.requests))
