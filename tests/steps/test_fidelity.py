"""prepare -> cluster (k-means++, random, pca) -> evaluate through the CLIs reproduces scikit-learn's
"A demo of K-Means clustering on the handwritten digits data".

The reference is the example's own code, run in-process (``tests/demo_reference.py``, shared with
the container tests); its silhouette draw gets the same seed as evaluate's.
"""

from __future__ import annotations

import json

from tests.demo_reference import VARIANTS, assert_matches_demo


def test_the_steps_reproduce_the_digits_demo(steps):
    steps("prepare")
    for init in VARIANTS:
        steps("cluster", "--init", init)
    steps("evaluate", "--seed", "0")
    payload = json.loads(steps.path("evaluate/metrics.json").read_text())
    assert_matches_demo(payload["variants"], seed=0)
    assert payload["ranked_by"] == "adjusted_mutual_info"
    assert payload["best"] == max(VARIANTS, key=lambda v: payload["variants"][v]["adjusted_mutual_info"])
    assert steps.manifest("cluster/pca")["results"]["n_init"] == 1
