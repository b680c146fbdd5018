"""Tests that need root say so (tests/fixtures/root.py), and a job as a non-root user runs all the
others: ``-m root`` and ``-m "not root"`` split the suite in two, a test that uses a root fixture
is marked however it gets to it, and a root test run by another user fails with one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import root

REPO = Path(__file__).resolve().parents[1]


def collected(*args: str) -> set[str]:
    found = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-3000:]
    return {line for line in found.stdout.splitlines() if "::" in line}


def test_root_and_not_root_split_the_suite_and_name_what_needs_root():
    everything, needs_root, the_rest = collected(), collected("-m", "root"), collected("-m", "not root")
    assert needs_root | the_rest == everything and not needs_root & the_rest
    modules = {test.split("::")[0] for test in needs_root}
    # marked directly (the module), through a fixture of its own (small_tmpfs), through a shared
    # fixture (the extra engines), or through another fixture that uses one (published -> ci_engine)
    assert {"tests/test_dataroot.py", "tests/containers/test_faults.py", "tests/engines/test_engine_script.py",
            "tests/registry/test_publish.py"} <= modules, modules
    faults = {test for test in everything if test.startswith("tests/containers/test_faults.py")}
    later = ("tests/containers/test_faults.py::"
             "test_a_later_step_killed_at_a_chosen_call_leaves_the_previous_output_or_nothing")
    assert {t for t in faults if t in needs_root} == {  # small_tmpfs, strace
        "tests/containers/test_faults.py::test_a_full_data_root_exits_2_in_one_line_and_keeps_the_previous_output",
        *(f"{later}[{step}]" for step in ("cluster", "evaluate", "report"))}
    assert all(re.match(r"tests/(containers/test_(faults|pipeline|pinned)|engines|registry|stack|test_(dataroot|"
                        r"reproducible))", t) for t in needs_root), needs_root


def test_a_root_test_run_by_another_user_fails_with_one_line(monkeypatch):
    monkeypatch.setattr(root.os, "geteuid", lambda: 1000)
    config = type("Config", (), {"getoption": lambda self, name, default=None: False})()  # not --setup-plan
    item = type("Item", (), {"get_closest_marker": lambda self, name: name == "root" or None, "config": config})()
    with pytest.raises(pytest.fail.Exception, match=r"^this test needs root \(marker `root`\): run it as root or "
                                                    r"under sudo with -m root; -m 'not root' leaves it out$"):
        root.pytest_runtest_setup(item)
    monkeypatch.setattr(root.os, "geteuid", lambda: 0)
    root.pytest_runtest_setup(item)  # as root: nothing to say
