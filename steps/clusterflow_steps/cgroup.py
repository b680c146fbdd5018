"""The step container's own limits as its cgroup states them (v2, else v1).

A top-level module because more than one step sizes its work to them (prepare's input budget, the
cluster step's refusal of quadratic memory, every step's thread count), and a step image ships only
the top-level modules and its own subpackage.
"""

from __future__ import annotations

from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63


def memory_limit(cgroup: Path = CGROUP) -> int | None:
    """This process's cgroup memory limit in bytes (v2 ``memory.max``, else v1), ``None`` if unlimited."""
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            return int(text)
        return None
    return None
