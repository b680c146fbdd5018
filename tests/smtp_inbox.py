"""A real SMTP server (aiosmtpd) for the notification tests: every message it receives, parsed;
and what every run's email must say."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller

from clusterflow import spec

CONN_ID = "clusterflow_smtp"
DAG_ID = spec.DAG_ID
FROM = "clusterflow-test@example.org"
TO = ("ops@example.org", "ml@example.org")


@dataclass
class Inbox:
    """What the server received; ``host``/``port`` are where it listens."""

    host: str
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def wait(self, count: int, timeout: float = 60) -> list[EmailMessage]:
        """The first ``count`` messages, once they have arrived (the DAG processor sends them late)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(self.messages) >= count, f"{len(self.messages)} of {count} messages arrived in {timeout:.0f} s"
        return self.messages[:count]

    def about(self, run_id: str, timeout: float = 180) -> list[EmailMessage]:
        """The messages whose subject names Airflow run ``run_id``, once one has arrived (others, such
        as the scheduler's own run after an unpause, are left aside)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in list(self.messages) if run_id in str(m["Subject"])]
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"no message about {run_id} arrived in {timeout:.0f} s: "
                             f"{[m['Subject'] for m in self.messages]}")

    def connection(self, **extra: Any) -> dict[str, Any]:
        """An Airflow smtp connection to this server (plain SMTP: no SSL, no STARTTLS, no retries)."""
        return {"conn_type": "smtp", "host": self.host, "port": self.port,
                "extra": {"from_email": FROM, "disable_ssl": True, "disable_tls": True, "retry_limit": 0,
                          "timeout": 10, **extra}}


@contextlib.contextmanager
def smtp_inbox(host: str = "127.0.0.1") -> Iterator[Inbox]:
    """An SMTP server on ``host`` (a free port) for the duration."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    inbox = Inbox(host, port)
    controller = Controller(inbox, hostname=host, port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def html_body(message: EmailMessage) -> str:
    """The message's HTML part, decoded."""
    part = message.get_body(preferencelist=("html",))
    assert part is not None, message
    return str(part.get_content())


def report_link(base_url: str, run_id: str) -> str:
    return f"{base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/plugin/clusterflow-report"


def assert_email(message: EmailMessage, run_id: str, outcome: str, *shown: str, base_url: str) -> str:
    """The email names the run, its outcome and links its Report tab; ``shown`` are in its body too."""
    assert message["From"] == FROM
    assert [a.strip() for a in message["To"].split(",")] == list(TO)
    assert message["Subject"].startswith(f"[clusterflow] {DAG_ID} {run_id}: {outcome}"), message["Subject"]
    body = html_body(message)
    link = report_link(base_url, run_id)
    for expected in (run_id, f"runs/{spec.safe_run_id(run_id)}", f"<b>{outcome}</b>", f'<a href="{link}">', *shown):
        assert expected in body, (expected, body)
    return body
