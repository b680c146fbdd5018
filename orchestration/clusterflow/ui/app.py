"""The FastAPI app the plugin mounts at ``/clusterflow`` in Airflow's API server: GET only.

Every route needs the Airflow UI's login (its ``_token`` cookie or a bearer token) and read
access to the runs of the clusterflow DAG; a browser without one is sent to the login page.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from clusterflow import spec
from clusterflow.spec import DAG_ID
from clusterflow.ui import files, pages, runs
from clusterflow_steps.contract import MANIFEST, METRICS, REPORT

MEDIA_TYPES = {REPORT.name: "text/html; charset=utf-8", METRICS.name: "application/json", MANIFEST: "application/json"}


def _served(relative: str, body: bytes) -> Response:
    return Response(body, media_type=MEDIA_TYPES[relative.rsplit("/", 1)[-1]], headers=pages.SECURITY_HEADERS)


def _page(text: str, status: int = 200) -> Response:
    return Response(text, status_code=status, media_type="text/html; charset=utf-8", headers=pages.SECURITY_HEADERS)


async def _login_redirect(request: Request, exc: HTTPException) -> Response:
    """A browser that is not logged in goes to Airflow's login page (and back); others get the 401."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return await http_exception_handler(request, exc)


def create_app() -> FastAPI:
    app = FastAPI(title="clusterflow reports", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID))],
                  exception_handlers={HTTPException: _login_redirect})

    @app.get(f"/{pages.RUNS_PAGE}")
    def runs_page(sort: str = "date", order: str = "desc", metric: str = "adjusted_mutual_info") -> Response:
        if sort not in runs.SORT_KEYS or metric not in runs.METRICS or order not in ("asc", "desc"):
            return _page(pages.message_page("Bad request", f"sort by one of {', '.join(runs.SORT_KEYS)}, order "
                                            f"asc or desc, plot one of {', '.join(runs.METRICS)}",
                                            runs_link=pages.RUNS_PAGE), 400)
        found = runs.load_runs(files.data_root())
        return _page(pages.runs_page(runs.sort_runs(found, sort, order == "desc"), runs.trend(found, metric),
                                     sort=sort, descending=order == "desc", metric=metric))

    @app.get(f"/{pages.RUNS_PAGE}/{{run_id}}/{pages.STEPS_PAGE}")
    def steps_page(run_id: str) -> Response:
        if run_id not in files.run_ids(files.data_root()):
            return _page(pages.message_page("No such run", f"no run {run_id!r} on the data root",
                                            runs_link=f"../../{pages.RUNS_PAGE}"), 404)
        return _page(pages.steps_page(run_id, runs.step_lines(files.data_root(), run_id)))

    @app.get(f"/{pages.RUNS_PAGE}/{{run_id}}/{{relative:path}}")
    def run_file(run_id: str, relative: str) -> Response:
        try:
            return _served(relative, files.read(files.data_root(), run_id, relative))
        except files.NotServed as exc:
            return _page(pages.message_page("Not served", str(exc)), exc.status)

    @app.get("/dags/{dag_id}/runs/{dag_run_id}/report")
    def dag_run_report(dag_id: str, dag_run_id: str) -> Response:
        """The Report tab of an Airflow run: its report, found by the run id the DAG gave the data root."""
        runs_link = f"../../../../{pages.RUNS_PAGE}"
        if dag_id != DAG_ID:
            return _page(pages.message_page("No clusterflow report", f"only {DAG_ID} runs have a clusterflow "
                                            f"report; {dag_id} is another DAG", runs_link=runs_link), 404)
        run_id = spec.safe_run_id(dag_run_id)
        try:
            return _served(REPORT.relative(), files.read(files.data_root(), run_id, REPORT.relative()))
        except files.NotServed:
            return _page(pages.message_page("No report yet", f"run {run_id} has no report yet: the report task "
                                            "writes it once evaluate has scored the run", runs_link=runs_link), 404)

    return app
