"""How every step container is launched, in every rendering: the runner, the DAG, the launch gate,
and the ``docker run`` line a report gives for re-running a step on a laptop.

Plain data (docker SDK keyword names) so that the orchestration, which launches, and the report
step, which only shows the command, read the same definition.
"""

from __future__ import annotations

from typing import Any

DATA_MOUNT = "/data"
INPUT_MOUNT = "/input"
# The step cache store (clusterflow_steps.cache): its own mount over /data/cache, read-only in every
# step container; only a task's commit container (the step's own command + --commit-cache)
# mounts it read-write, with the data root read-only. So no step can plant an entry.
CACHE_MOUNT = f"{DATA_MOUNT}/cache"
STEP_USER = "10001:10001"
# Which image a step runs in (the reference it was launched by, and its digest): set by the runners,
# recorded in every manifest, part of the cache key.
IMAGE_ENV = "CLUSTERFLOW_IMAGE"
IMAGE_DIGEST_ENV = "CLUSTERFLOW_IMAGE_DIGEST"

# Steps need no network, no privileges and no writable root filesystem; only /data (the mount) and
# /tmp (a tmpfs) are writable.
CONTAINER_POLICY: dict[str, Any] = {
    "network_mode": "none",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=512m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "pids_limit": 256,
}
