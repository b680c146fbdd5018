"""The email a finished digits_kmeans run sends (the seed's task C), built from the run's facts.

Pure (no Airflow): :mod:`clusterflow.notifier` gathers the facts in the DAG's callbacks and sends
what :func:`message` builds through the SMTP provider's ``SmtpNotifier``. Notifications are off
until the Airflow Variable :data:`SMTP_CONN_VARIABLE` names an SMTP connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from clusterflow_steps.report.formats import COLUMN_TITLES, FORMATS, esc, format_metric

from clusterflow import spec

SMTP_CONN_VARIABLE = "clusterflow_smtp_conn_id"  # an Airflow connection of type smtp; unset: no email
RECIPIENTS_VARIABLE = "clusterflow_notify_to"  # comma-separated addresses
# Where the Airflow UI puts a plugin's external view with a url_route (its React router).
UI_PLUGIN_PATH = "plugin"

SUCCESS = "success"
GATE_FAILED = "quality gate failed"
FAILED = "failed"


@dataclass(frozen=True)
class Settings:
    """Where the email goes: the SMTP connection id and the recipients."""

    conn_id: str
    to: tuple[str, ...]


def settings(conn_id: str | None, recipients: str | None) -> Settings | None:
    """The configured settings, or None (notifications off) when no connection id is set.

    A connection without recipients is a configuration error: ValueError with the fix.
    """
    conn_id = (conn_id or "").strip()
    if not conn_id:
        return None
    to = tuple(address.strip() for address in (recipients or "").split(",") if address.strip())
    if not to:
        raise ValueError(f"Variable {SMTP_CONN_VARIABLE}={conn_id!r} but no recipients: set Variable "
                         f"{RECIPIENTS_VARIABLE} to comma-separated addresses, or unset {SMTP_CONN_VARIABLE}")
    return Settings(conn_id, to)


@dataclass(frozen=True)
class RunFacts:
    """What the email says about one finished DAG run."""

    dag_id: str
    run_id: str  # Airflow's run id
    failed: bool  # the DAG run's state
    summary: Mapping[str, Any] | None  # evaluate's one-line summary XCom (best, ranked_by, metrics), if any
    gate: Mapping[str, Any] | None  # evaluate's quality_gate XCom ({passed, reason}); None: not reached
    reason: str | None = None  # Airflow's reason for the callback (task_failure, timed_out, ...)


def outcome(facts: RunFacts) -> str:
    """success, quality gate failed (evaluate's verdict failed the run) or failed (anything else)."""
    if not facts.failed:
        return SUCCESS
    return GATE_FAILED if facts.gate is not None and facts.gate.get("passed") is False else FAILED


def gate_verdict(gate: Mapping[str, Any] | None) -> str:
    if gate is None:
        return "not reached (evaluate did not score the run)"
    return "passed" if gate.get("passed") else f"failed: {gate.get('reason') or 'no reason recorded'}"


def report_url(base_url: str, route: str, dag_id: str, run_id: str) -> str:
    """The run's Report tab in the Airflow UI: the plugin's dag_run view ``route`` under the run's page."""
    return (f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
            f"/{UI_PLUGIN_PATH}/{quote(route, safe='')}")


@dataclass(frozen=True)
class Message:
    subject: str
    html: str


def message(facts: RunFacts, link: str) -> Message:
    """The email for ``facts``: subject with the outcome; body with the run ids, outcome, best
    variant and its metrics, the gate's verdict and ``link`` (the Report tab). Every value escaped."""
    result = outcome(facts)
    summary = facts.summary or {}
    best = summary.get("best")
    rows = [("run", facts.run_id), ("run directory", f"runs/{spec.safe_run_id(facts.run_id)}"),
            ("outcome", result), ("best variant", best or "none (evaluate produced no summary)")]
    if best:
        rows.append(("ranked by", summary.get("ranked_by", "")))
        metrics: Mapping[str, Any] = summary.get("metrics") or {}
        rows += [(COLUMN_TITLES.get(name, name), format_metric(value, FORMATS.get(name, "{:.3f}")))
                 for name, value in metrics.items()]
    rows.append(("quality gate", gate_verdict(facts.gate)))
    if facts.failed and facts.reason:
        rows.append(("Airflow reason", facts.reason))
    cells = "".join(f"<tr><th align='left'>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in rows)
    html = (f"<p>{esc(facts.dag_id)} run {esc(facts.run_id)}: <b>{esc(result)}</b></p><table>{cells}</table>"
            f"<p><a href=\"{esc(link)}\">Report</a>: {esc(link)}</p>")
    subject = f"[clusterflow] {facts.dag_id} {facts.run_id}: {result}" + (f" (best {best})" if best else "")
    return Message(subject, html)
