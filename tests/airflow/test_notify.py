"""The run's email through Airflow's SmtpNotifier, received by a real SMTP server on loopback.

The fast tests call the DAG's callback (:func:`clusterflow.notifier.send`) in the Airflow venv with
evaluate's XComs given, as the DAG processor would after a run; the container tests run the DAG
(``airflow dags test``, which runs the DAG's callbacks itself) and read the email it sent.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from clusterflow import notify
from tests.airflow.conftest import DAG_ID, airflow_environment
from tests.airflow.test_dags_test import DagsTest
from tests.fixtures.docker import writable_data_dir
from tests.smtp_inbox import CONN_ID, TO, Inbox, assert_email, smtp_inbox

BASE_URL = "http://airflow.example:8080"
DAGS_TEST_BASE_URL = "http://localhost:8080"  # [api] base_url as scripts/airflow.sh sets it (default port)
RUN_ID = "manual__2026-12-02T07:00:00+00:00"
SUMMARY = {"best": "k-means++", "ranked_by": "adjusted_mutual_info",
           "metrics": {"inertia": 69545.25, "adjusted_rand": 0.4697, "adjusted_mutual_info": 0.6012,
                       "silhouette": 0.1325, "fit_seconds": 0.21},
           "quality_gate": {"passed": True, "failures": [], "thresholds": {}}}
BREACH = "Error: quality gate failed for best variant k-means++: adjusted_rand 0.470 < --min-ari 0.99"

# Runs in the Airflow venv: the DAG's callback, with evaluate's XComs as the request gives them.
CALLBACK_PROBE = """
import json, sys
from airflow.sdk import DAG
from clusterflow import dag as airflow_dag, notifier

request = json.load(sys.stdin)
built = airflow_dag.build_dag()
assert built.on_success_callback is notifier.on_success and built.on_failure_callback is notifier.on_failure
notifier._xcom = lambda dag_id, run_id, key: request["xcoms"].get(key)
callback = notifier.on_failure if request["failed"] else notifier.on_success
callback({"dag": DAG(request["dag_id"], schedule=None), "run_id": request["run_id"], "reason": request["reason"]})
"""


def notification_env(inbox: Inbox | None, conn_id: str = CONN_ID, **connection: Any) -> dict[str, str]:
    """Notifications on: the connection to ``inbox`` (as AIRFLOW_CONN_*) and the two Variables."""
    env = {"AIRFLOW_VAR_CLUSTERFLOW_SMTP_CONN_ID": conn_id, "AIRFLOW_VAR_CLUSTERFLOW_NOTIFY_TO": ",".join(TO)}
    if inbox is not None:
        env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({**inbox.connection(), **connection})
    return env


def callback(airflow_venv: Path, home: Path, env: dict[str, str], *, failed: bool, xcoms: dict[str, Any],
             reason: str | None = None) -> subprocess.CompletedProcess[str]:
    request = {"dag_id": DAG_ID, "run_id": RUN_ID, "failed": failed, "xcoms": xcoms, "reason": reason}
    done = subprocess.run([str(airflow_venv / "bin" / "python"), "-c", CALLBACK_PROBE], input=json.dumps(request),
                          env=airflow_environment(home, "/unused", AIRFLOW__API__BASE_URL=BASE_URL, **env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # the callback never raises
    return done


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_a_successful_run_emails_its_best_variant_metrics_verdict_and_report_link(airflow_venv, home):
    with smtp_inbox() as inbox:
        done = callback(airflow_venv, home, notification_env(inbox), failed=False,
                        xcoms={"return_value": SUMMARY, "quality_gate": {"passed": True, "reason": None}})
    (message,) = inbox.messages
    assert message["Subject"] == f"[clusterflow] {DAG_ID} {RUN_ID}: success (best k-means++)"
    assert_email(message, RUN_ID, "success", "best variant</th><td>k-means++", "adjusted Rand index</th><td>0.470",
                 "adjusted mutual information</th><td>0.601", "quality gate</th><td>passed", base_url=BASE_URL)
    assert inbox.recipients == [list(TO)]
    assert f"notified {', '.join(TO)} of run {RUN_ID} (success)" in done.stdout + done.stderr


def test_a_gate_breach_emails_quality_gate_failed_with_the_gates_reason(airflow_venv, home):
    with smtp_inbox() as inbox:
        callback(airflow_venv, home, notification_env(inbox), failed=True, reason="task_failure",
                 xcoms={"quality_gate": {"passed": False, "reason": BREACH}})
    (message,) = inbox.messages
    body = assert_email(message, RUN_ID, "quality gate failed", "quality gate</th><td>failed: Error: quality gate "
                        "failed for best variant k-means++: adjusted_rand 0.470 &lt; --min-ari 0.99",
                        base_url=BASE_URL)
    assert "<b>failed</b>" not in body


def test_a_failed_run_emails_failed_and_that_the_gate_was_not_reached(airflow_venv, home):
    with smtp_inbox() as inbox:
        callback(airflow_venv, home, notification_env(inbox), failed=True, reason="task_failure", xcoms={})
    (message,) = inbox.messages
    assert message["Subject"] == f"[clusterflow] {DAG_ID} {RUN_ID}: failed"
    assert_email(message, RUN_ID, "failed", "quality gate</th><td>not reached", "Airflow reason</th><td>task_failure",
                 base_url=BASE_URL)


def test_without_a_connection_id_nothing_is_sent_or_logged(airflow_venv, home):
    with smtp_inbox() as inbox:
        env = {k: v for k, v in notification_env(inbox).items() if k != "AIRFLOW_VAR_CLUSTERFLOW_SMTP_CONN_ID"}
        done = callback(airflow_venv, home, env, failed=False, xcoms={"return_value": SUMMARY})
    assert inbox.messages == []
    assert "clusterflow" not in done.stdout + done.stderr


def test_a_connection_id_that_does_not_exist_is_one_log_line_and_no_attempt(airflow_venv, home):
    with smtp_inbox() as inbox:
        done = callback(airflow_venv, home, notification_env(inbox, conn_id="no_such_connection"), failed=True,
                        xcoms={})
    assert inbox.messages == []
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "clusterflow: " in line]
    assert len(lines) == 1 and "connection 'no_such_connection' (Variable clusterflow_smtp_conn_id) does not " \
                               "exist: add it" in lines[0], lines


def test_recipients_missing_is_one_log_line(airflow_venv, home):
    with smtp_inbox() as inbox:
        env = {**notification_env(inbox), "AIRFLOW_VAR_CLUSTERFLOW_NOTIFY_TO": " "}
        done = callback(airflow_venv, home, env, failed=False, xcoms={"return_value": SUMMARY})
    assert inbox.messages == []
    assert f"set Variable {notify.RECIPIENTS_VARIABLE}" in done.stdout + done.stderr


def test_an_smtp_server_that_is_not_there_is_one_log_line(airflow_venv, home):
    with smtp_inbox() as inbox:
        env = notification_env(inbox)
    done = callback(airflow_venv, home, env, failed=False, xcoms={"return_value": SUMMARY})  # the server is gone
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "clusterflow: " in line]
    assert len(lines) == 1 and f"no notification sent through connection '{CONN_ID}'" in lines[0], lines


# --- the DAG itself, under `airflow dags test` (its callbacks run in the test's process) ---------------------

@pytest.fixture(scope="module")
def dags_home(airflow_venv, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notify-home")


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with smtp_inbox() as found:
        yield found


def dags_test(inbox: Inbox, home: Path, tmp_path_factory, conf: dict[str, Any] | None = None,
              **env: str) -> tuple[DagsTest, list[EmailMessage]]:
    """One `airflow dags test` run with notifications on; the run and the messages it sent."""
    before = len(inbox.messages)
    run = DagsTest(home, writable_data_dir(tmp_path_factory, "notify-data"), conf,
                   **{**notification_env(inbox), **env})
    return run, inbox.messages[before:]


@pytest.mark.container
def test_dags_test_a_successful_run_sends_its_email(docker_cli, inbox, dags_home, tmp_path_factory):
    run, sent = dags_test(inbox, dags_home, tmp_path_factory, {"inits": ["k-means++"]})
    assert run.run and run.run["state"] == "success", run.output[-6000:]
    metrics = json.loads((run.run_dir / "evaluate/metrics.json").read_text())
    (message,) = sent
    ari = metrics["variants"]["k-means++"]["adjusted_rand"]
    assert_email(message, run.run_id, "success", "best variant</th><td>k-means++",
                 f"adjusted Rand index</th><td>{ari:.3f}", "quality gate</th><td>passed",
                 base_url=DAGS_TEST_BASE_URL)


@pytest.mark.container
def test_dags_test_a_gate_breach_emails_quality_gate_failed(docker_cli, inbox, dags_home, tmp_path_factory):
    run, sent = dags_test(inbox, dags_home, tmp_path_factory, {"inits": ["k-means++"], "min_ari": 0.99})
    assert run.run and run.run["state"] == "failed"
    (message,) = sent
    assert_email(message, run.run_id, "quality gate failed",
                 "quality gate</th><td>failed: Error: quality gate failed for best variant k-means++",
                 base_url=DAGS_TEST_BASE_URL)


@pytest.mark.container
def test_dags_test_a_failed_run_emails_failed(docker_cli, inbox, dags_home, tmp_path_factory):
    # no image has this tag: prepare fails (no retry helps), evaluate never runs
    run, sent = dags_test(inbox, dags_home, tmp_path_factory, CLUSTERFLOW_IMAGE_TAG="0.0.0-no-such-tag")
    assert run.run and run.run["state"] == "failed"
    (message,) = sent
    assert_email(message, run.run_id, "failed", "quality gate</th><td>not reached", base_url=DAGS_TEST_BASE_URL)


@pytest.mark.container
def test_dags_test_a_missing_connection_leaves_the_run_as_it_was_with_one_log_line(docker_cli, inbox, dags_home,
                                                                                   tmp_path_factory):
    run, sent = dags_test(inbox, dags_home, tmp_path_factory, CLUSTERFLOW_IMAGE_TAG="0.0.0-no-such-tag",
                          AIRFLOW_VAR_CLUSTERFLOW_SMTP_CONN_ID="no_such_connection")
    assert run.run and run.run["state"] == "failed"  # as without notifications: prepare failed
    assert sent == []
    assert run.output.count("connection 'no_such_connection' (Variable clusterflow_smtp_conn_id) does not exist") == 1
