"""The image workflow (.github/workflows/images.yml) is valid and does what the project promises.

* It validates against GitHub's workflow schema (check-jsonschema's vendored copy, so no
  network). A missing validator is a failure, not a skip: a workflow nobody checked must not pass.
* The step matrix covers exactly the four step images, each built from images/<step>/Dockerfile.
* Images go to ghcr.io only on tags v*: every build that pushes outside the job-local registry,
  and every registry login, is gated on refs/tags/v.
* Every action is pinned by a full commit SHA (a tag can be moved to other code), with the
  release it is in a comment on the same line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "images.yml"
STEPS = {"prepare", "cluster", "evaluate", "report"}
TAG_GATE = re.compile(r"""^\$\{\{\s*startsWith\(\s*github\.ref\s*,\s*'refs/tags/v'\s*\)\s*\}\}$""")
TAG_IF = re.compile(r"""^(\$\{\{\s*)?startsWith\(\s*github\.ref\s*,\s*'refs/tags/v'\s*\)(\s*\}\})?$""")
LOCAL_REGISTRY = re.compile(r"^localhost:\d+/")
PINNED_USES = re.compile(r"^\s*(-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s+v\d+\.\d+\.\d+\s*$")


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def triggers(wf: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as True.
    on = wf.get("on", wf.get(True))
    assert isinstance(on, dict), f"'on' must be a mapping, got {on!r}"
    return on


def all_steps(wf: dict[Any, Any]):
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


def test_the_workflow_is_valid_for_github_actions() -> None:
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"workflow schema check failed:\n{proc.stdout}{proc.stderr}"


def test_matrix_covers_exactly_the_four_steps(workflow: dict[Any, Any]) -> None:
    matrices = {job_id: job["strategy"]["matrix"] for job_id, job in workflow["jobs"].items()
                if "step" in job.get("strategy", {}).get("matrix", {})}
    assert len(matrices) == 1, f"expected one job with a step matrix, found {sorted(matrices)}"
    (job_id, matrix), = matrices.items()
    values = matrix["step"]
    assert isinstance(values, list) and len(values) == len(set(values)), values
    assert set(values) == STEPS
    assert not matrix.get("include") and not matrix.get("exclude"), "no include/exclude tricks"
    builds = [s for s in workflow["jobs"][job_id]["steps"] if uses(s, "docker/build-push-action")]
    files = [s.get("with", {}).get("file", "") for s in builds]
    assert "images/${{ matrix.step }}/Dockerfile" in files, files


def test_base_is_built_before_the_steps(workflow: dict[Any, Any]) -> None:
    jobs = workflow["jobs"]
    (job_id,) = [j for j, job in jobs.items() if "step" in job.get("strategy", {}).get("matrix", {})]
    needs = jobs[job_id].get("needs", [])
    needs = [needs] if isinstance(needs, str) else needs
    assert any(any(s.get("with", {}).get("file") == "images/base/Dockerfile"
                   for s in jobs[n].get("steps", []) if uses(s, "docker/build-push-action"))
               for n in needs), f"job {job_id} must need the job that builds images/base"


def test_push_to_ghcr_only_on_tags(workflow: dict[Any, Any]) -> None:
    on = triggers(workflow)
    assert "v*" in (on.get("push") or {}).get("tags", []), "push trigger must include tags v*"

    pushing_jobs = set()
    for job_id, job, step in all_steps(workflow):
        if uses(step, "docker/build-push-action"):
            w = step.get("with", {})
            tags = [t.strip() for t in re.split(r"[,\n]", str(w.get("tags", ""))) if t.strip()]
            push = w.get("push", False)
            outputs = str(w.get("outputs", ""))
            local_only = bool(tags) and all(LOCAL_REGISTRY.match(t) for t in tags)
            if push is True or "type=registry" in outputs or "push=true" in outputs:
                assert local_only, (f"{job_id}: {step.get('name')} pushes unconditionally to "
                                    f"{tags}; only the job-local localhost registry may")
            elif push not in (False, None, "false"):
                assert TAG_GATE.match(str(push)), f"{job_id}: push must be tag-gated, got {push!r}"
                pushing_jobs.add(job_id)
        if uses(step, "docker/login-action"):
            assert TAG_IF.match(str(step.get("if", ""))), (
                f"{job_id}: registry login must run on tags v* only, got if={step.get('if')!r}")
        assert "docker push" not in str(step.get("run", "")), f"{job_id}: no ad-hoc docker push"

    matrix_jobs = {j for j, job in workflow["jobs"].items()
                   if "step" in job.get("strategy", {}).get("matrix", {})}
    assert matrix_jobs and matrix_jobs <= pushing_jobs, "the step images must be pushed on tags"
    for job_id in pushing_jobs:
        perms = workflow["jobs"][job_id].get("permissions", {})
        assert perms.get("packages") == "write", f"{job_id} needs permissions: packages: write"
    assert workflow.get("permissions", {}).get("packages") in (None, "read", "none"), \
        "packages: write belongs on the pushing jobs only"


def test_tests_run_in_ci(workflow: dict[Any, Any]) -> None:
    runs = [str(step.get("run", "")) for job_id, job, step in all_steps(workflow)
            if job.get("runs-on") == "ubuntu-latest"]
    assert any(re.search(r"^\s*make test\b", r, re.M) for r in runs), "a job must run `make test`"


def test_every_action_is_pinned_by_commit_sha(workflow: dict[Any, Any]) -> None:
    used = [str(step["uses"]) for _, _, step in all_steps(workflow) if "uses" in step]
    assert used, "the workflow uses no action at all?"
    lines = [line for line in WORKFLOW.read_text(encoding="utf-8").splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert len(lines) == len(used), lines
    unpinned = [line.strip() for line in lines if not PINNED_USES.match(line)]
    assert unpinned == [], f"pin these by a 40-hex commit SHA with '# vX.Y.Z' after it: {unpinned}"


def test_the_pin_check_refuses_tags_and_short_shas() -> None:
    for line in ("      - uses: actions/checkout@v5",
                 "      - uses: actions/checkout@fbc6f39  # v5.1.0",
                 "      - uses: actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09",
                 "        uses: docker/login-action@main  # v4.1.0"):
        assert not PINNED_USES.match(line), line
    assert PINNED_USES.match("      - uses: actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09  # v5.1.0")
