"""How the report (and the Airflow UI's runs page) prints metrics: the demo's benchmark format.

Standard library only, so the Airflow API server can import it without numpy.
"""

from __future__ import annotations

import html
from typing import Any

from clusterflow_steps.contract import is_number

NULL = "\u2013"  # en dash, for a metric without a value (no labels)

# The demo's printed benchmark table: (header, metric key, format) per column after "init".
COLUMNS = (
    ("time", "fit_seconds", "{:.3f}s"),
    ("inertia", "inertia", "{:.0f}"),
    ("homo", "homogeneity", "{:.3f}"),
    ("compl", "completeness", "{:.3f}"),
    ("v-meas", "v_measure", "{:.3f}"),
    ("ARI", "adjusted_rand", "{:.3f}"),
    ("AMI", "adjusted_mutual_info", "{:.3f}"),
    ("silhouette", "silhouette", "{:.3f}"),
)
FORMATS = {key: spec for _, key, spec in COLUMNS}
COLUMN_TITLES = {
    "fit_seconds": "fit time of the StandardScaler + KMeans pipeline",
    "inertia": "sum of squared distances to the closest center (scaled features)",
    "homogeneity": "homogeneity score", "completeness": "completeness score", "v_measure": "V-measure",
    "adjusted_rand": "adjusted Rand index", "adjusted_mutual_info": "adjusted mutual information",
    "silhouette": "silhouette coefficient (sampled)",
}


def format_metric(value: Any, spec: str) -> str:
    """One table cell as the demo prints it; ``–`` for a missing value."""
    return spec.format(value) if is_number(value) else NULL


def esc(value: object) -> str:
    """``value`` as HTML text or attribute value (quotes escaped too)."""
    return html.escape(str(value), quote=True)
