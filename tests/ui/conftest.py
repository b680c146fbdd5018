"""UI tests: the clusterflow plugin in a real Airflow, looked at through headless Chromium.

The browser is Debian's ``chromium`` driven through Debian's ``chromium-driver`` (selenium), so
the driver always matches the browser and nothing is downloaded at run time. They never skip:
missing packages are installed (as root on Debian: apt-get), otherwise every browser test fails
with the command to run. Screenshots go to ``test-artifacts/ui/`` (``$CLUSTERFLOW_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
WINDOW = (1366, 900)  # a laptop screen
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--window-size={WINDOW[0]},{WINDOW[1]}")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium and its driver, installed when missing (root on Debian)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return CHROMIUM
    install = ["apt-get", "install", "-y", "-qq", *PACKAGES]
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        pytest.fail(f"the browser tests need Debian's chromium: run `sudo {' '.join(install)}`", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"`{' '.join(install)}` failed:\n{done.stderr[-2000:]}", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("CLUSTERFLOW_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator:
    """A headless Chromium with a fresh profile, closed after the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(chromium)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()
