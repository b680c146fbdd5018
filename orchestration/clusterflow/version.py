"""The project version: the repository's VERSION file, else the installed package's metadata."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

_FILE = Path(__file__).resolve().parents[2] / "VERSION"

VERSION = _FILE.read_text().strip() if _FILE.is_file() else importlib.metadata.version("clusterflow")
