"""Names that become path components under the data root: run ids and variants.

Pure standard library, so the orchestration side (the Airflow DAG, the local runner) applies the
very same rule as the steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class NameRule:
    """A safe single path component: ``extra`` characters besides letters and digits."""

    what: str
    extra: str
    longest: int

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(f"[A-Za-z0-9{re.escape(self.extra)}]{{1,{self.longest}}}")

    def problem(self, value: str | None) -> str | None:
        """Why ``value`` breaks the rule (one line that says how to fix it), or ``None``."""
        if self.pattern.fullmatch(value or "") and ".." not in value and not value.startswith("."):
            return None
        return (f"invalid {self.what} {value!r}: use 1-{self.longest} letters, digits and "
                f"'{self.extra}', not starting with '.' and without '..'")


RUN_ID = NameRule("run id", "._-", 128)
VARIANT = NameRule("variant", "._+-", 64)
