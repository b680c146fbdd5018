"""Each session fixture is set up once per session, whichever directories a run collects.

A fixture imported into a second conftest or test module is a second fixture of the same name,
with a cache of its own: its session fixture ran once per importer (the engine check and image
build up to four times). The shared ones are plugins of the root conftest instead (tests/fixtures/);
``pytest --setup-plan`` lists every set-up without running one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# One module of each directory that uses the shared session fixtures.
MODULES = ("tests/containers/test_images.py", "tests/airflow/test_dag.py", "tests/airflow/test_dags_test.py",
           "tests/gate/test_engine.py", "tests/ui/test_plugin.py", "tests/engines/test_digests_across_engines.py",
           "tests/stack/test_compose.py", "tests/registry/test_publish.py")


def test_every_session_fixture_is_set_up_once_across_the_directories():
    plan = subprocess.run([sys.executable, "-m", "pytest", "--setup-plan", "-q", "-p", "no:cacheprovider",
                           *MODULES], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert plan.returncode in (0, 5), plan.stdout[-3000:] + plan.stderr[-3000:]  # 5: nothing ran
    setups = Counter(re.findall(r"^SETUP +S (\w+)", plan.stdout, flags=re.MULTILINE))
    assert {"docker_cli", "engine", "airflow_venv", "registry", "published"} <= set(setups), setups
    assert {name: n for name, n in setups.items() if n > 1} == {}
