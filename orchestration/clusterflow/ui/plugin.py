"""The Airflow plugin: the report app in the API server, a Report tab on runs, a Runs page in the nav.

Airflow loads plugins in every component (scheduler, DAG processor, workers), so this module
imports nothing heavy: the FastAPI app is built on the API server's first request to it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/clusterflow"


class BuiltOnFirstRequest:
    """An ASGI app that creates :func:`clusterflow.ui.app.create_app` when it is first called."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            from clusterflow.ui.app import create_app

            self.app = create_app()
        await self.app(scope, receive, send)


class ClusterflowPlugin(AirflowPlugin):
    name = "clusterflow"
    fastapi_apps = [{"app": BuiltOnFirstRequest(), "url_prefix": URL_PREFIX, "name": "clusterflow reports"}]
    # href without a leading slash: relative to the UI's <base href>, so a base path in [api] base_url works.
    # The UI replaces {DAG_ID} and {RUN_ID} (URI-encoded) for views whose destination is not "nav".
    external_views = [
        {"name": "Report", "href": "clusterflow/dags/{DAG_ID}/runs/{RUN_ID}/report", "destination": "dag_run",
         "url_route": "clusterflow-report"},
        {"name": "Reports", "href": "clusterflow/runs", "destination": "nav",
         "url_route": "clusterflow-runs", "nav_top_level": True},
    ]
