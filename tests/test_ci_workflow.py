"""The image workflow (.github/workflows/images.yml) is valid and does what the project promises.

* It validates against GitHub's workflow schema (check-jsonschema's vendored copy, so no
  network). A missing validator is a failure, not a skip: a workflow nobody checked must not pass.
* The suite runs on every push; images are published only on tags v*, only after the suite
  passed, and only by `make publish` (the script the suite exercises against a local registry,
  tests/registry): no other step builds-and-pushes or logs in anywhere.
* The digests file the publish writes is kept as a build artifact and as a release asset.
* Every action is pinned by a full commit SHA (a tag can be moved to other code), with the
  release it is in a comment on the same line.
* `make test` (what the workflow and .ci/run call) runs `make lint` first, over every shell script
  and Dockerfile of the repository.
"""

from __future__ import annotations

import fnmatch
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


def publish_steps(wf: dict[Any, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(job_id, job, step) for job_id, job, step in all_steps(wf)
            if re.search(r"\bmake\b.*\bpublish\b|scripts/publish\.sh", str(step.get("run", "")))]


def tag_gated(job: dict[str, Any], step: dict[str, Any]) -> bool:
    return any(TAG_IF.match(str(x.get("if", ""))) for x in (job, step))


def test_the_push_path_is_make_publish_on_tags_after_the_suite(workflow: dict[Any, Any]) -> None:
    on = triggers(workflow)
    assert "v*" in (on.get("push") or {}).get("tags", []), "push trigger must include tags v*"
    found = publish_steps(workflow)
    assert len(found) == 1, f"expected one `make publish` step, found {[(j, s.get('name')) for j, _, s in found]}"
    (job_id, job, step), = found
    assert re.search(r"^\s*(sudo\b.*\s)?make publish\b", str(step["run"]), re.M), step["run"]
    assert 'REGISTRY="ghcr.io/' in str(step["run"]), "images go to ghcr.io/<owner>"
    assert tag_gated(job, step), f"{job_id}: publish must run on tags v* only"
    needs = job.get("needs", [])
    assert "test" in ([needs] if isinstance(needs, str) else needs), f"{job_id} must need the test job"
    assert job.get("permissions", {}).get("packages") == "write", f"{job_id} needs packages: write"
    assert workflow.get("permissions", {}).get("packages") in (None, "read", "none"), \
        "packages: write belongs on the publishing job only"


def test_make_publish_runs_the_script_the_suite_tests() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^publish:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has no publish target"
    assert re.search(r"scripts/publish\.sh \$\(REGISTRY\)", recipe.group(1)), recipe.group(1)
    tests = "".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").rglob("*.py"))
    assert '"scripts" / "publish.sh"' in tests, "no test runs scripts/publish.sh"


def test_nothing_else_pushes_or_logs_in(workflow: dict[Any, Any]) -> None:
    publishing = {job_id for job_id, _, _ in publish_steps(workflow)}
    for job_id, job, step in all_steps(workflow):
        action = str(step.get("uses", "")).split("@")[0]
        assert action not in ("docker/build-push-action", "docker/login-action"), \
            f"{job_id}: {action} is a second push path; publish with make publish"
        run = str(step.get("run", ""))
        assert not re.search(r"\b(docker|buildah|podman) push\b|\bskopeo copy\b", run), \
            f"{job_id}: no ad-hoc push ({step.get('name')})"
        if re.search(r"\blogin\b", run):
            assert job_id in publishing and tag_gated(job, step), f"{job_id}: a login outside the tag-gated publish job"
            assert "--password-stdin" in run and "secrets." not in run, \
                f"{job_id}: the token goes through stdin from env, never on a command line"


def test_the_digests_file_is_an_artifact_and_a_release_asset(workflow: dict[Any, Any]) -> None:
    (job_id, job, _), = publish_steps(workflow)
    steps = job["steps"]
    artifacts = [s for s in steps if uses(s, "actions/upload-artifact")]
    assert [s["with"]["path"] for s in artifacts] == ["images/digests.json"], artifacts
    assert any(re.search(r"\bgh release upload\b.*\bimages/digests\.json\b", str(s.get("run", "")))
               for s in steps), f"{job_id}: no `gh release upload ... images/digests.json`"
    assert job.get("permissions", {}).get("contents") == "write", f"{job_id}: a release asset needs contents: write"


def test_tests_run_in_ci_as_the_runners_user_and_the_root_tests_under_sudo(workflow: dict[Any, Any]) -> None:
    """GitHub's runner user is not root: the test job runs `make test` (lint, then every test not
    marked root) as that user, then `make test-root` (only those marked root) under sudo; between
    them every test runs once, and nothing else selects or deselects."""
    test_steps = [(job_id, str(step.get("run", "")).strip()) for job_id, job, step in all_steps(workflow)
                  if re.search(r"\bmake test", str(step.get("run", "")))]
    assert test_steps == [("test", "make test PYTEST_ARGS=\"-m 'not root'\""),
                          ("test", "sudo --preserve-env=PATH make test-root")], test_steps
    assert workflow["jobs"]["test"]["runs-on"] == "ubuntu-latest"
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test-root:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and re.search(r"-m pytest -m root \$\(PYTEST_ARGS\)$", recipe.group(1).strip()), recipe
    assert (REPO / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("\nmake test")  # as root: all


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


def make_variable(makefile: str, name: str) -> list[str]:
    """The words of a `NAME := ...` line, with `$(wildcard ...)` unwrapped to its patterns."""
    found = re.search(rf"^{name}\s*:?=\s*(.*)$", makefile, re.M)
    assert found, f"the Makefile has no {name}"
    return re.sub(r"\$\(wildcard ([^)]*)\)", r"\1", found.group(1)).split()


def test_make_test_runs_make_lint_first_over_every_script_and_dockerfile() -> None:
    """CI runs `make test` (.ci/run), so the linters run there; a script or Dockerfile added where
    the Makefile's patterns do not look would go unlinted, so this test names it."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test:\s*lint\b", makefile, re.M), "make test must depend on lint"
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has no lint target"
    for tool in ("ruff check", "mypy", "shellcheck $(SHELL_SCRIPTS)", "hadolint $(DOCKERFILES)"):
        assert tool in recipe.group(1), f"make lint does not run {tool}"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    shebang = re.compile(rb"^#!\S*(/|env )(ba|da)?sh\b")
    scripts = [f for f in tracked if (REPO / f).is_file() and shebang.match((REPO / f).read_bytes()[:64])]
    dockerfiles = [f for f in tracked if Path(f).name.startswith("Dockerfile")]
    for files, variable in ((scripts, "SHELL_SCRIPTS"), (dockerfiles, "DOCKERFILES")):
        patterns = make_variable(makefile, variable)
        missed = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
        assert files and not missed, f"{variable} ({' '.join(patterns)}) misses {missed}"
