"""The quality gate: thresholds the best variant's scores must meet."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.evaluate.metrics import require_labels
from clusterflow_steps.params import GATE as OPTIONS  # option -> the metric it bounds
from clusterflow_steps.params import option_name as option_key


@dataclass(frozen=True)
class Threshold:
    option: str
    metric: str
    limit: float

    def failure(self, value: float | None) -> str | None:
        """Why ``value`` breaches this threshold (one line), or ``None`` if it meets it."""
        if value is None:
            return f"{self.metric} is undefined, so {self.option} {self.limit:g} is not met"
        if self.option.startswith("--min-") and value < self.limit:
            return f"{self.metric} {value:.3f} < {self.option} {self.limit:g}"
        if self.option.startswith("--max-") and value > self.limit:
            return f"{self.metric} {value:.3f} > {self.option} {self.limit:g}"
        return None


def thresholds(limits: dict[str, float | None], has_labels: bool) -> list[Threshold]:
    """The thresholds set in ``limits`` (keyed by :func:`option_key`), checked for usability."""
    found = []
    for option, metric in OPTIONS.items():
        limit = limits.get(option_key(option))
        if limit is None:
            continue
        if not math.isfinite(limit):
            raise UserError(f"{option} {limit}: give a finite number")
        require_labels(metric, option, has_labels)
        found.append(Threshold(option, metric, limit))
    return found


def check(row: dict[str, Any], gate: list[Threshold]) -> dict[str, Any]:
    """The gate's verdict on the best variant's ``row``, as recorded in ``metrics.json``."""
    failures = [reason for t in gate if (reason := t.failure(row[t.metric])) is not None]
    return {"passed": not failures, "failures": failures,
            "thresholds": {option_key(t.option): t.limit for t in gate}}


def verdict(best: str, result: dict[str, Any]) -> str:
    """One line for the log and the exit message."""
    if result["passed"]:
        return f"quality gate passed for best variant {best}"
    return f"quality gate failed for best variant {best}: {'; '.join(result['failures'])}"
