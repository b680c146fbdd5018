"""Timing, process statistics and the tables the harness prints."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated measurements."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self, unit: str = "s", digits: int = 2) -> str:
        lo, hi = min(self.values), max(self.values)
        return f"{self.median:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f}, n={len(self.values)})"


def repeat(measure: Callable[[], float], times: int) -> Stat:
    return Stat(tuple(measure() for _ in range(times)))


def stats(samples: Sequence[dict[str, float]]) -> dict[str, Stat]:
    """Per key, the :class:`Stat` of the values that each sample (one run) measured."""
    return {key: Stat(tuple(s[key] for s in samples)) for key in samples[0]}


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@dataclass(frozen=True)
class ProcessRun:
    seconds: float
    peak_rss_bytes: int
    stdout: str


def run_process(command: Sequence[str], env: dict[str, str] | None = None, timeout: float = 1800) -> ProcessRun:
    """Run ``command`` to completion: wall time, the peak RSS it reports, its stdout; raise on failure."""
    started = time.perf_counter()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{out[-2000:]}\n{err[-3000:]}")
    return ProcessRun(seconds, _peak_rss(out), out)


PEAK_RSS = "PEAK-RSS-KB"
# Run a module as ``python -m`` would, then print its peak RSS (also when it exits by SystemExit).
PEAK_RSS_WRAPPER = ("import atexit, resource, runpy, sys; atexit.register(lambda: print("
                    f"'{PEAK_RSS}', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)); "
                    "sys.argv.pop(0); runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def _peak_rss(output: str) -> int:
    """Bytes: the largest ``PEAK-RSS-KB <n>`` of ``output`` (0 without one). A task's log can hold
    two, its step's and then its cache commit's: the last one would be the commit's."""
    return max((int(line.split(PEAK_RSS)[1].split()[0]) * 1024 for line in output.splitlines() if PEAK_RSS in line),
               default=0)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine() -> list[str]:
    """Lines describing the machine and the software measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return [f"CPU: {os.cpu_count()} x {cpu}; memory {memory} MiB; kernel {platform.release()}",
            f"Docker engine {docker}; Python {platform.python_version()} (host)",
            f"load average (1/5/15 min) at start: {load()}"]


@dataclass
class Table:
    """A titled table; ``notes`` print under it."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append(tuple(str(c) for c in cells))

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×" if reference > 0 else "n/a"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
