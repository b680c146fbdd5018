"""Container tests run against a real Docker engine and the freshly built images (the session
fixtures ``docker_cli``, ``engine`` and ``data_dir`` of tests/fixtures/docker.py)."""

from __future__ import annotations

import html as html_module
import re
from pathlib import Path
from typing import Any

from clusterflow.version import VERSION

REPO = Path(__file__).resolve().parents[2]


def image(step: str) -> str:
    return f"clusterflow/{step}:{VERSION}"


# The demo's table (scikit-learn's plot_kmeans_digits.py): inertia to 0 decimals, the scores to 3.
DEMO_FORMATS = {"inertia": "{:.0f}", "homogeneity": "{:.3f}", "completeness": "{:.3f}", "v_measure": "{:.3f}",
                "adjusted_rand": "{:.3f}", "adjusted_mutual_info": "{:.3f}", "silhouette": "{:.3f}"}


def assert_report_shows(html: str, variants: dict[str, dict[str, Any]]) -> None:
    """The report's metrics table has one row per variant of ``metrics.json``, each showing that
    variant's scores as the demo prints them, and a figure."""
    rows = dict(re.findall(r'<tr[^>]* data-variant="([^"]+)">(.*?)</tr>', html, flags=re.DOTALL))
    assert sorted(html_module.unescape(v) for v in rows) == sorted(variants), sorted(rows)
    for variant, row in rows.items():
        shown = dict(re.findall(r'data-metric="(\w+)">([^<]*)</td>', row))
        scores = variants[html_module.unescape(variant)]
        assert {m: shown.get(m) for m in DEMO_FORMATS} == {m: f.format(scores[m]) for m, f in DEMO_FORMATS.items()}
    assert "data:image/png;base64," in html
