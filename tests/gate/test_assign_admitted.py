"""The assign step through the launch gate: its image is a step image, its dataset a read-only input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterflow import pinning, runner, spec
from clusterflow.gate import config
from tests.gate.conftest import PUBLISHED, REGISTRY
from tests.gate.test_admitted import GATED, client, creates


def test_the_local_runner_assigns_through_the_gate_with_the_dataset_read_only(gate: str, fake_docker: Any,
                                                                              data_root: Path, inputs: Path) -> None:
    (data_root / "runs" / "r1").mkdir(parents=True, exist_ok=True)
    local = runner.LocalRunner(client(gate), data_root, log=lambda line: None, run_as=GATED)
    summary = local.assign(spec.RunId("r1"), str(inputs / "points.csv"), pinning.local("0.1.0", (spec.ASSIGN,)))
    assert summary == data_root.resolve() / "runs" / "r1" / "assign" / "summary.json"
    step, commit = (json.loads(r["body"]) for r in creates(fake_docker))
    assert step["Image"] == "clusterflow/assign:0.1.0"
    assert step["Cmd"] == ["--run-id", "r1", "--dataset", "/input/points.csv"]
    assert step["HostConfig"]["Mounts"][2] == {"Target": "/input/points.csv", "Source": str(inputs / "points.csv"),
                                               "Type": "bind", "ReadOnly": True}
    assert commit["Cmd"][-1] == "--commit-cache"


def test_a_publish_pins_the_assign_image_and_the_gate_admits_it_by_digest(tmp_path: Path) -> None:
    path = tmp_path / "digests.json"
    path.write_text(json.dumps({"registry": REGISTRY, "version": "0.1.0", "commit": "c" * 40, "images": {
        name: f"{REGISTRY}/clusterflow/{name}@{digest}" for name, digest in PUBLISHED.items()}}))
    settings = config.from_env({config.DATA_SOURCE_ENV: "v", pinning.DIGESTS_ENV: str(path)}).settings
    assert settings.pins is not None
    assert settings.pins[spec.ASSIGN] == f"{REGISTRY}/clusterflow/assign@{PUBLISHED['assign']}"
    assert pinning.STEP_IMAGE.fullmatch("clusterflow/assign:0.1.0")
    assert pinning.pinned_step(settings.pins[spec.ASSIGN], REGISTRY) == spec.ASSIGN
