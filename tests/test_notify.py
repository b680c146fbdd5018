"""The run's email, as :mod:`clusterflow.notify` builds it (pure: no Airflow, no SMTP)."""

from __future__ import annotations

import pytest

from clusterflow import notify, spec

RUN = "scheduled__2026-12-01T22:00:00+00:00"
SUMMARY = {"best": "k-means++", "ranked_by": "adjusted_mutual_info",
           "metrics": {"inertia": 69545.25, "adjusted_rand": 0.4697, "adjusted_mutual_info": 0.6012,
                       "silhouette": None},
           "quality_gate": {"passed": True, "failures": [], "thresholds": {}}}
PASSED = {"passed": True, "reason": None}
BREACHED = {"passed": False, "reason": "Error: quality gate failed for best variant k-means++: "
                                       "adjusted_rand 0.470 < --min-ari 0.99"}
LINK = "http://airflow.example:8080/dags/digits_kmeans/runs/x/plugin/clusterflow-report"


def facts(failed: bool = False, summary=SUMMARY, gate=PASSED, reason: str | None = None) -> notify.RunFacts:
    return notify.RunFacts("digits_kmeans", RUN, failed, summary, gate, reason)


@pytest.mark.parametrize("conn_id", [None, "", "  "])
def test_notifications_are_off_without_a_connection_id(conn_id):
    assert notify.settings(conn_id, "ops@example.org") is None


def test_the_settings_name_the_connection_and_every_recipient():
    found = notify.settings(" smtp_ops ", "ops@example.org, ml@example.org,")
    assert found == notify.Settings("smtp_ops", ("ops@example.org", "ml@example.org"))


def test_a_connection_without_recipients_says_what_to_set():
    with pytest.raises(ValueError, match=f"set Variable {notify.RECIPIENTS_VARIABLE}"):
        notify.settings("smtp_ops", " , ")


@pytest.mark.parametrize("run, expected", [
    (facts(), notify.SUCCESS),
    (facts(failed=True, summary=None, gate=BREACHED), notify.GATE_FAILED),
    (facts(failed=True, summary=None, gate=None), notify.FAILED),  # evaluate never got to its verdict
    (facts(failed=True, gate=PASSED), notify.FAILED),  # the gate passed, then report failed
])
def test_the_outcome_tells_a_gate_breach_from_a_failure(run, expected):
    assert notify.outcome(run) == expected


def test_the_report_link_is_the_plugin_route_under_the_runs_page_with_the_run_id_encoded():
    url = notify.report_url("http://airflow.example:8080/", "clusterflow-report", "digits_kmeans", RUN)
    assert url == ("http://airflow.example:8080/dags/digits_kmeans/runs/"
                   "scheduled__2026-12-01T22%3A00%3A00%2B00%3A00/plugin/clusterflow-report")


def test_a_successful_runs_email_has_its_ids_best_variant_metrics_verdict_and_link():
    built = notify.message(facts(), LINK)
    assert built.subject == f"[clusterflow] digits_kmeans {RUN}: success (best k-means++)"
    for shown in (RUN, f"runs/{spec.safe_run_id(RUN)}", "<b>success</b>", "k-means++", "adjusted_mutual_info",
                  "adjusted Rand index</th><td>0.470", "adjusted mutual information</th><td>0.601",
                  "</th><td>69545</td>", "silhouette coefficient (sampled)</th><td>\u2013",
                  "quality gate</th><td>passed", f'<a href="{LINK}">Report</a>'):
        assert shown in built.html, shown
    assert "Airflow reason" not in built.html


def test_a_gate_breach_says_quality_gate_failed_and_why():
    built = notify.message(facts(failed=True, summary=None, gate=BREACHED, reason="task_failure"), LINK)
    assert built.subject == f"[clusterflow] digits_kmeans {RUN}: quality gate failed"
    assert "<b>quality gate failed</b>" in built.html
    assert "quality gate</th><td>failed: Error: quality gate failed for best variant k-means++: " \
           "adjusted_rand 0.470 &lt; --min-ari 0.99" in built.html
    assert LINK in built.html


def test_a_failure_before_evaluate_says_failed_and_that_the_gate_was_not_reached():
    built = notify.message(facts(failed=True, summary=None, gate=None, reason="task_failure"), LINK)
    assert built.subject == f"[clusterflow] digits_kmeans {RUN}: failed"
    assert "best variant</th><td>none (evaluate produced no summary)" in built.html
    assert "quality gate</th><td>not reached" in built.html
    assert "Airflow reason</th><td>task_failure" in built.html


def test_every_value_is_escaped():
    built = notify.message(facts(summary={**SUMMARY, "best": "<script>"}), 'http://x/"><b>')
    assert "<script>" not in built.html and "&lt;script&gt;" in built.html
    assert 'href="http://x/&quot;&gt;&lt;b&gt;"' in built.html
