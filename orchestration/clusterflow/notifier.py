"""The DAG's success and failure callbacks: the run's email through the SMTP provider's SmtpNotifier.

The thin Airflow shell around :mod:`clusterflow.notify`: read the settings (Airflow Variables, at
callback time, so notifications are switched on and off without a redeploy), gather the run's facts
from evaluate's XComs, send. A notification never changes a run's state: whatever goes wrong
(a connection id that does not exist, an SMTP server that refuses) is one logged line.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.configuration import conf
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import Connection, Variable
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowNotFoundException

from clusterflow import notify, spec
from clusterflow.operators import GATE_XCOM
from clusterflow.ui.plugin import ClusterflowPlugin

log = logging.getLogger(__name__)

(GATED_STEP,) = [step for step, role in spec.ROLES.items() if role.gate_exit_code is not None]
# The plugin's Report tab (its dag_run view), as the plugin defines it.
(REPORT_ROUTE,) = [str(view["url_route"]) for view in ClusterflowPlugin.external_views
                   if isinstance(view, dict) and view["destination"] == "dag_run"]
DEFAULT_BASE_URL = "http://localhost:8080"  # Airflow's default API server, when [api] base_url is unset
DEFAULT_SENDER = "clusterflow@localhost"  # unless the connection's extra sets from_email


def on_success(context: Any) -> None:
    """The DAG's on_success_callback."""
    send(context, failed=False)


def on_failure(context: Any) -> None:
    """The DAG's on_failure_callback (a quality-gate breach too: the email tells them apart)."""
    send(context, failed=True)


def send(context: Any, *, failed: bool) -> None:
    """Email the run's outcome when Variable ``clusterflow_smtp_conn_id`` is set; else nothing."""
    try:
        found = notify.settings(Variable.get(notify.SMTP_CONN_VARIABLE, default=None),
                                Variable.get(notify.RECIPIENTS_VARIABLE, default=None))
    except ValueError as exc:
        log.error("clusterflow: no notification sent: %s", exc)
        return
    if found is None:
        return
    try:
        connection = Connection.get(found.conn_id)
    except AirflowNotFoundException:
        log.error("clusterflow: no notification sent: connection %r (Variable %s) does not exist: add it "
                  "(airflow connections add %s --conn-type smtp --conn-host HOST ...) or unset the Variable",
                  found.conn_id, notify.SMTP_CONN_VARIABLE, found.conn_id)
        return
    dag_id, run_id = context["dag"].dag_id, str(context["run_id"])
    try:  # best effort: the run's outcome stands whatever happens here
        facts = notify.RunFacts(dag_id, run_id, failed, summary=_xcom(dag_id, run_id, BaseXCom.XCOM_RETURN_KEY),
                                gate=_xcom(dag_id, run_id, GATE_XCOM), reason=context.get("reason"))
        base_url = conf.get("api", "base_url", fallback=None) or DEFAULT_BASE_URL
        built = notify.message(facts, notify.report_url(base_url, REPORT_ROUTE, dag_id, run_id))
        SmtpNotifier(to=list(found.to), smtp_conn_id=found.conn_id, subject=built.subject, html_content=built.html,
                     from_email=connection.extra_dejson.get("from_email") or DEFAULT_SENDER,
                     ).notify(context)  # not __call__, which would render the message as a Jinja template
    except Exception as exc:
        log.error("clusterflow: no notification sent through connection %r: %s: %s", found.conn_id,
                  type(exc).__name__, (str(exc).strip().splitlines() or [""])[-1])
    else:
        log.info("clusterflow: notified %s of run %s (%s)", ", ".join(found.to), run_id, notify.outcome(facts))


def _xcom(dag_id: str, run_id: str, key: str) -> Any:
    """The gated step's (evaluate's) XCom ``key`` in a finished run, or None.

    In the DAG processor (where Airflow runs DAG callbacks) the Task SDK reads it through the
    processor's supervisor; ``airflow dags test`` runs callbacks in its own process, which has no
    supervisor but the metadata database at hand.
    """
    try:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_one(key=key, dag_id=dag_id, task_id=GATED_STEP, run_id=run_id)
    except ImportError:  # no SUPERVISOR_COMMS: airflow dags test
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.scalars(XComModel.get_many(run_id=run_id, key=key, dag_ids=dag_id, task_ids=GATED_STEP,
                                                     limit=1)).first()
        return None if row is None else XComModel.deserialize_value(row)
