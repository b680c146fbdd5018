"""Progress of a long step, on stderr: one line per phase with its time, a bar on a terminal.

Only steps on large data report (``MIN_ELEMENTS`` matrix elements or more, e.g. 100,000 x 64):
small runs stay as quiet as before, and a user error stays one line. Everything goes to stderr,
so a step's stdout keeps its contract (evaluate's last stdout line is its JSON summary). The bar
is drawn only when stderr is a terminal; logs get the phase lines.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import click

T = TypeVar("T")


MIN_ELEMENTS = 5_000_000


class Progress:
    """Phase lines of one step: ``<step>: <phase> (<seconds> s, <total> s elapsed)``.

    ``elements`` is the size of the step's data; set it as soon as it is known (a phase is
    reported at its end, so the phase that loads the data can set it).
    """

    def __init__(self, step: str, elements: int = 0):
        self.step, self.elements = step, elements
        self.started = time.perf_counter()

    @property
    def loud(self) -> bool:
        return self.elements >= MIN_ELEMENTS

    @contextlib.contextmanager
    def phase(self, what: str) -> Iterator[None]:
        """Time the block; once it is done, say ``what`` and how long it took."""
        started = time.perf_counter()
        yield
        if self.loud:
            now = time.perf_counter()
            click.echo(f"{self.step}: {what} ({now - started:.2f} s, {now - self.started:.2f} s elapsed)",
                       err=True)

    def bar(self, items: Iterable[T], length: int, label: str) -> Iterator[T]:
        """``items``, with a progress bar on stderr when it is a terminal."""
        if not (self.loud and sys.stderr.isatty()):
            yield from items
            return
        with click.progressbar(items, length=length, label=f"{self.step}: {label}", file=sys.stderr,
                               show_eta=True) as shown:
            yield from shown
