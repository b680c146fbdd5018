"""A host data root made ready for a run's step containers (both renderings use this)."""

from __future__ import annotations

import os
from pathlib import Path

from clusterflow import spec

CACHE = "cache"  # the steps' shared content-addressed store (clusterflow_steps.cache)


def prepare_run_dir(data_root: Path, run_id: str) -> Path:
    """Create ``runs/<run_id>`` and the cache store; as root, hand both to the steps' user.

    Steps run as the images' non-root user when the orchestrator is root (otherwise as the
    orchestrator's own uid, which owns what it just created).
    """
    run_dir = data_root / "runs" / spec.validate_run_id(run_id)
    store = data_root / CACHE
    run_dir.mkdir(parents=True, exist_ok=True)
    store.mkdir(exist_ok=True)
    if os.getuid() == 0:
        uid, gid = (int(x) for x in spec.STEP_USER.split(":"))
        for path in (run_dir.parent, run_dir, *run_dir.rglob("*"), store, *store.rglob("*")):
            os.chown(path, uid, gid, follow_symlinks=False)
    return run_dir
