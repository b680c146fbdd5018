"""The run's email from the compose stack: the DAG processor runs the DAG's callbacks and sends
through SmtpNotifier to a real SMTP server on this host (aiosmtpd on the project network's gateway,
which the Airflow containers reach). The connection and the two Variables are set through the REST
API, as an operator would; nothing in docker-compose.yml changes. Tests run in file order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from clusterflow import notify
from tests.smtp_inbox import CONN_ID, TO, Inbox, assert_email, smtp_inbox
from tests.stack.conftest import Stack

pytestmark = pytest.mark.container


def gateway(stack: Stack) -> str:
    """The host's address on the network the DAG processor shares with the stack (not the internal one)."""
    (container,) = stack.containers("airflow-dag-processor", all_states=False)
    networks = json.loads(stack.docker("inspect", container).stdout)[0]["NetworkSettings"]["Networks"]
    return networks[f"{stack.project}_default"]["Gateway"]


@pytest.fixture(scope="module")
def inbox(stack: Stack) -> Iterator[Inbox]:
    """An SMTP server the stack reaches, configured as the DAG's notification target over the REST API."""
    stack.login()
    with smtp_inbox(gateway(stack)) as found:
        connection = found.connection()
        answer = stack.api("POST", "/connections", json={
            "connection_id": CONN_ID, "conn_type": "smtp", "host": found.host, "port": found.port,
            "extra": json.dumps(connection["extra"])})
        assert answer.status_code in (200, 201), answer.text
        for key, value in ((notify.SMTP_CONN_VARIABLE, CONN_ID), (notify.RECIPIENTS_VARIABLE, ",".join(TO))):
            answer = stack.api("POST", "/variables", json={"key": key, "value": value})
            assert answer.status_code in (200, 201), answer.text
        yield found


def finished_with_email(stack: Stack, inbox: Inbox, conf: dict[str, Any]) -> tuple[dict[str, Any], EmailMessage]:
    """Trigger a run, wait for it to end and for the one email the DAG processor sends for it (the
    unpause also lets the scheduler start its own latest scheduled run, which mails too)."""
    run = stack.finish(stack.trigger(conf))
    sent = inbox.about(run["dag_run_id"])
    assert len(sent) == 1, [m["Subject"] for m in sent]
    return run, sent[0]


def base_url(stack: Stack) -> str:
    return f"http://localhost:{stack.port}"  # docker-compose.yml's AIRFLOW__API__BASE_URL


def test_a_successful_run_emails_its_best_variant_and_report_link(stack: Stack, inbox: Inbox):
    run, message = finished_with_email(stack, inbox, {"inits": ["random"]})
    assert run["state"] == "success"
    assert_email(message, run["dag_run_id"], "success", "best variant</th><td>random",
                 "adjusted Rand index</th><td>0.", "quality gate</th><td>passed", base_url=base_url(stack))


def test_a_gate_breach_emails_quality_gate_failed(stack: Stack, inbox: Inbox):
    run, message = finished_with_email(stack, inbox, {"inits": ["random"], "min_ari": 0.99})
    assert run["state"] == "failed"
    assert_email(message, run["dag_run_id"], "quality gate failed",
                 "quality gate</th><td>failed: Error: quality gate failed for best variant random",
                 base_url=base_url(stack))


def test_a_failed_run_emails_failed(stack: Stack, inbox: Inbox):
    # a dataset file that is not on the data volume: prepare fails (after its retries), evaluate never runs
    run, message = finished_with_email(stack, inbox, {"inits": ["random"], "dataset": "/data/no-such-dataset.csv"})
    assert run["state"] == "failed"
    assert_email(message, run["dag_run_id"], "failed", "quality gate</th><td>not reached", base_url=base_url(stack))
