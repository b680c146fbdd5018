"""Each step image ships only the top-level modules of clusterflow_steps and its own subpackage (plus
what its Dockerfile stage adds): every clusterflow_steps module a step imports, at the top of a file
or inside a function, must be among them, or the step fails in its container only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from clusterflow_steps import contract

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "steps" / "clusterflow_steps"
DOCKERFILES = {"report": REPO / "images" / "report" / "Dockerfile"}
STEP_DOCKERFILE = REPO / "images" / "step" / "Dockerfile"
SUBPACKAGE_COPY = re.compile(r"^COPY steps/clusterflow_steps/([a-z_]+)/", re.M)


def shipped(step: str) -> set[str]:
    """The subpackages the image of ``step`` holds, read from its Dockerfile: its own, and any its
    stage copies (the report's Dockerfile copies its own by name)."""
    path = DOCKERFILES.get(step, STEP_DOCKERFILE)
    text = path.read_text()
    if path == STEP_DOCKERFILE:
        stages = re.split(r"^FROM ", text, flags=re.M)
        text = next(s for s in stages if re.match(rf"\S+ AS {step}\b", s))
    return {step, *SUBPACKAGE_COPY.findall(text)}


def module_file(name: str) -> Path:
    parts = name.split(".")[1:]
    folder = PACKAGE.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def subpackage(name: str) -> str | None:
    """The step subpackage module ``name`` lies in, or ``None`` for a top-level module."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else None


def imported(path: Path) -> set[str]:
    """The clusterflow_steps modules ``path`` imports anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clusterflow_steps"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("clusterflow_steps")}
    return found


def closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        assert path.exists(), f"{name} is imported but {path} does not exist"
        todo += imported(path)
    return seen


@pytest.mark.parametrize("step", contract.IMAGES)
def test_a_step_imports_only_what_its_image_ships(step):
    allowed = shipped(step)
    outside = sorted(name for name in closure(f"clusterflow_steps.{step}.__main__")
                     if subpackage(name) not in (None, *allowed))
    assert not outside, f"the {step} image ships {sorted(allowed)} and the top-level modules, but imports {outside}"


def test_the_check_sees_an_import_from_another_step():
    assert "clusterflow_steps.prepare.datasets" in closure("clusterflow_steps.assign.__main__")
    assert shipped("assign") == {"assign", "prepare"} and shipped("cluster") == {"cluster"}
