"""The real gate server on loopback, in front of a recording fake engine (tests/gate/fake_engine.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterflow.gate import config
from clusterflow.gate.server import Gate
from tests.gate import fake_engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(env: dict[str, str]) -> Iterator[str]:
    """Run a gate with ``env`` (its whole environment) in a thread; yield its URL."""
    port = free_port()
    gate = Gate(config.from_env({**env, config.LISTEN_ENV: f"127.0.0.1:{port}"}))
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(gate.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"

    async def stop() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
def fake_docker(tmp_path: Path) -> Iterator[fake_engine.Engine]:
    found = fake_engine.start(tmp_path / "engine.sock")
    yield found
    found.shutdown()
    found.server_close()


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The operator's one allowed input directory, with a dataset in it."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "points.csv").write_text("x,y\n1,2\n")
    return folder


def gate_env(data_root: Path, inputs: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {config.SOCKET_ENV: str(tmp_path / "engine.sock"), config.DATA_SOURCE_ENV: str(data_root),
            config.INPUT_DIRS_ENV: str(inputs), "CLUSTERFLOW_STEP_MEMORY": "2g", "CLUSTERFLOW_STEP_CPUS": "2",
            config.IMAGE_TAG_ENV: "0.1.0", **extra}


@pytest.fixture
def gate(fake_docker: fake_engine.Engine, data_root: Path, inputs: Path, tmp_path: Path) -> Iterator[str]:
    yield from serve(gate_env(data_root, inputs, tmp_path))


REGISTRY = "127.0.0.1:5000"
# A publish's digests, stated here by hand (not by the code under test)
PUBLISHED = {name: "sha256:" + f"{i}" * 64 for i, name in
             enumerate(("core", "base", "prepare", "cluster", "evaluate", "report", "assign"), start=1)}
PINNED_PREPARE = f"{REGISTRY}/clusterflow/prepare@{PUBLISHED['prepare']}"


@pytest.fixture
def pinned_gate(fake_docker: fake_engine.Engine, data_root: Path, inputs: Path, tmp_path: Path) -> Iterator[str]:
    """A gate given the digests file of a publish to 127.0.0.1:5000."""
    digests = tmp_path / "digests.json"
    digests.write_text(json.dumps({"registry": REGISTRY, "version": "0.1.0", "commit": "c" * 40, "images": {
        name: f"{REGISTRY}/clusterflow/{name}@{digest}" for name, digest in PUBLISHED.items()}}))
    yield from serve(gate_env(data_root, inputs, tmp_path, CLUSTERFLOW_DIGESTS=str(digests)))


@pytest.fixture
def registry_gate(fake_docker: fake_engine.Engine, data_root: Path, inputs: Path, tmp_path: Path) -> Iterator[str]:
    """A gate given only CLUSTERFLOW_REGISTRY=127.0.0.1:5000."""
    yield from serve(gate_env(data_root, inputs, tmp_path, CLUSTERFLOW_REGISTRY=REGISTRY))
