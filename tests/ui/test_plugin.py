"""The clusterflow plugin in `airflow standalone`, used as a person would: over HTTP and in Chromium.

One embedded Airflow for the module, its data root holding two fixture runs (distinct scores, for
sorting), a symlink out of the data root, and one real run of the DAG triggered through the API.
It runs in multi-team mode: the DAG folder's bundle belongs to one team, and besides admin there is
a user who may read what another team may read, so not this DAG (authorization, not just login).
"""

from __future__ import annotations

import html
import http.client
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from clusterflow import spec
from clusterflow_steps.launch import manifest_line
from tests.airflow.conftest import DAG_ID, Airflow, airflow_environment, standalone_airflow
from tests.airflow.conftest import airflow as airflow_cli
from tests.steps.report_fixtures import blobs, make_run
from tests.fixtures.docker import writable_data_dir

# The policy as the README states it (not the plugin's own constant): a loosened CSP fails here.
PROMISED_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'; "
                "base-uri 'none'; form-action 'none'")

pytestmark = pytest.mark.container

SECRET = "SECRET-OUTSIDE-THE-DATA-ROOT"
FIXTURE_ARI = {"fixture-low": 0.111, "fixture-high": 0.999}

# Airflow's SimpleAuthManager in multi-team mode: the DAG folder's bundle (so digits_kmeans) belongs
# to TEAM; OUTSIDER logs in like anyone, as a viewer of OTHER_TEAM: it may read what that team and
# no team own (the DAG list, assets, pools), but not this DAG. admin (no team) may read everything.
TEAM, OTHER_TEAM, OUTSIDER = "clusterflow", "others", "outsider"
MULTI_TEAM = {
    "AIRFLOW__CORE__MULTI_TEAM": "True",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{OUTSIDER}:viewer:{OTHER_TEAM}",
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([{
        "name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {}, "team_name": TEAM}]),
    # A DAG's team is cached per API server process for 30 s by default, "no team" included: the
    # fixture's wait for the DAG to be parsed would cache that, and let OUTSIDER read it meanwhile.
    "AIRFLOW__CORE__TEAM_NAME_CACHE_TTL": "0",
}


@pytest.fixture(scope="module")
def standalone(airflow_venv, docker_cli, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("ui-home")
    data = writable_data_dir(tmp_path_factory, "ui-data")
    small = blobs(n_samples=60, n_features=3, centers=3)
    for run_id, ari in FIXTURE_ARI.items():
        make_run(data, run_id, dataset="synthetic", data=small, variants=("random",),
                 metric_overrides={"random": {"adjusted_rand": ari}})
    outside = data.parent / "outside"
    (outside / "report").mkdir(parents=True)
    for name in ("secret.json", "manifest.json", "report/report.html"):
        (outside / name).write_text(SECRET)
    (data / "runs/escape").symlink_to(outside)  # a run directory that is a symlink out
    (data / "runs/fixture-low/report").mkdir()
    (data / "runs/fixture-low/report/report.html").symlink_to(outside / "report/report.html")
    # The teams exist before the DAG processor gives the bundle to TEAM (it fails on a missing team).
    env = airflow_environment(home, data, **MULTI_TEAM)
    for args in (("db", "migrate"), ("teams", "create", TEAM), ("teams", "create", OTHER_TEAM)):
        done = airflow_cli(env, *args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-4000:])
    with standalone_airflow(home, data, **MULTI_TEAM) as airflow:
        yield airflow


@pytest.fixture(scope="module")
def finished(standalone) -> dict[str, Any]:
    run = standalone.finished(standalone.trigger(), 300)
    assert run["state"] == "success", standalone.log_tail()
    return run


def raw_get(airflow: Airflow, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` byte for byte (no client normalises ``..`` or decodes ``%2F`` on the way)."""
    connection = http.client.HTTPConnection("localhost", airflow.port, timeout=30)
    auth = airflow.session.headers.get("Authorization")
    connection.request("GET", path, headers={**({"Authorization": auth} if auth else {}), **headers})
    answer = connection.getresponse()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()


# --- login ---------------------------------------------------------------------------------------

def report_paths(run: dict[str, Any]) -> list[str]:
    run_id = spec.safe_run_id(run["dag_run_id"])
    return ["/clusterflow/runs", f"/clusterflow/runs/{run_id}/report/report.html",
            f"/clusterflow/runs/{run_id}/evaluate/metrics.json", f"/clusterflow/runs/{run_id}/steps",
            f"/clusterflow/dags/{DAG_ID}/runs/{quote(run['dag_run_id'], safe='')}/report"]


def test_without_login_the_api_answers_401_and_a_browser_is_sent_to_the_login_page(standalone, finished):
    for path in report_paths(finished):
        answer = requests.get(standalone.url + path, timeout=30)
        assert answer.status_code == 401, (path, answer.text)
        assert SECRET not in answer.text and "<table" not in answer.text
        page = requests.get(standalone.url + path, headers={"Accept": "text/html"}, allow_redirects=False,
                            timeout=30)
        assert page.status_code == 303
        login = urlsplit(page.headers["location"])
        back = urlsplit(parse_qs(login.query)["next"][0])
        assert login.path == "/auth/login" and back.path.startswith("/clusterflow/"), page.headers["location"]
        forged = requests.get(standalone.url + path, cookies={"_token": "not-a-jwt"}, timeout=30)
        assert forged.status_code in (401, 403), path


def test_a_logged_in_user_who_may_not_read_the_dag_gets_403_and_nothing_of_its_runs(standalone, finished):
    password = json.loads((standalone.home / "simple_auth_manager_passwords.json.generated").read_text())[OUTSIDER]
    login = requests.post(f"{standalone.url}/auth/token", json={"username": OUTSIDER, "password": password},
                          timeout=10)
    assert login.status_code == 201, login.text  # a logged-in user: Airflow issued the token
    token = login.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    # The premise, from Airflow's own API: the token is a valid login that may read (the DAG list:
    # 200, without this DAG), and may not read this DAG's runs (403), which admin may.
    listed = requests.get(f"{standalone.url}/api/v2/dags", headers=bearer, timeout=30)
    assert listed.status_code == 200 and DAG_ID not in {d["dag_id"] for d in listed.json()["dags"]}, listed.text
    refused = requests.get(f"{standalone.url}/api/v2/dags/{DAG_ID}/dagRuns", headers=bearer, timeout=30)
    assert refused.status_code == 403, refused.text
    admin = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns")
    assert admin.status_code == 200 and finished["dag_run_id"] in {r["dag_run_id"] for r in admin.json()["dag_runs"]}

    run_id = spec.safe_run_id(finished["dag_run_id"])
    metrics = json.loads((standalone.data / "runs" / run_id / "evaluate/metrics.json").read_text())
    paths = [*report_paths(finished), f"/clusterflow/runs/{run_id}/evaluate/manifest.json",
             "/clusterflow/runs/fixture-high/evaluate/metrics.json"]
    for path in paths:
        answer = requests.get(standalone.url + path, headers=bearer, timeout=30)
        # "Forbidden" is the refused authorization; a token Airflow did not accept is "Invalid JWT token".
        assert answer.status_code == 403 and answer.json() == {"detail": "Forbidden"}, \
            (path, answer.status_code, answer.text[:300])
        for shown in (SECRET, run_id, "<table", "<html", metrics["best"], "adjusted_mutual_info", "silhouette"):
            assert shown not in answer.text, (path, shown)
        # A browser logged in as OUTSIDER (the UI's cookie) is refused too, not sent to log in again.
        page = requests.get(standalone.url + path, cookies={"_token": token}, headers={"Accept": "text/html"},
                            allow_redirects=False, timeout=30)
        assert page.status_code == 403 and "location" not in page.headers, (path, page.status_code, page.headers)
        assert SECRET not in page.text and run_id not in page.text and "<table" not in page.text, path
        assert raw_get(standalone, path)[0] == 200, path  # admin, the same path at the same moment


def test_logged_in_it_serves_the_runs_files_as_they_are_on_disk(standalone, finished):
    run_id = spec.safe_run_id(finished["dag_run_id"])
    run_dir = standalone.data / "runs" / run_id
    for relative in ("report/report.html", "evaluate/metrics.json", "evaluate/manifest.json",
                     "cluster/random/manifest.json", "prepare/manifest.json"):
        status, headers, body = raw_get(standalone, f"/clusterflow/runs/{run_id}/{relative}")
        assert status == 200 and body == (run_dir / relative).read_bytes(), relative
        assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = raw_get(standalone, report_paths(finished)[-1])
    assert status == 200 and body == (run_dir / "report/report.html").read_bytes()
    assert headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == PROMISED_CSP


def test_the_steps_page_shows_the_docker_run_line_of_every_step_of_the_run(standalone, finished):
    run_id = spec.safe_run_id(finished["dag_run_id"])
    status, headers, body = raw_get(standalone, f"/clusterflow/runs/{run_id}/steps")
    assert status == 200 and headers["content-security-policy"] == PROMISED_CSP
    shown = dict(re.findall(r'<section data-step="([^"]+)"><h2>[^<]*</h2><pre class="rerun">(.*?)</pre>',
                            body.decode()))
    run_dir = standalone.data / "runs" / run_id
    expected = {str(p.parent.relative_to(run_dir)): p for p in run_dir.rglob("manifest.json")}
    assert set(shown) == set(expected) >= {"prepare", "cluster/random", "evaluate", "report"}
    for key, path in expected.items():  # the report's own rendering of what each step recorded
        assert html.unescape(shown[key]) == manifest_line(json.loads(path.read_text())), key
    status, _, body = raw_get(standalone, "/clusterflow/runs/escape/steps")  # a symlinked run directory
    assert status == 404 and SECRET.encode() not in body


def test_the_report_tab_of_a_run_without_a_report_says_so(standalone):
    status, _, body = raw_get(standalone, f"/clusterflow/dags/{DAG_ID}/runs/manual__never/report")
    assert status == 404 and b"has no report yet" in body
    status, _, body = raw_get(standalone, "/clusterflow/dags/another_dag/runs/manual__never/report")
    assert status == 404 and b"another DAG" in body


# --- path safety, read-only ------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/clusterflow/runs/fixture-high/../../../outside/secret.json",
    "/clusterflow/runs/fixture-high/..%2F..%2F..%2Foutside%2Fsecret.json",
    "/clusterflow/runs/fixture-high/%2e%2e/%2e%2e/%2e%2e/outside/secret.json",
    "/clusterflow/runs/..%2F..%2Foutside/secret.json",
    "/clusterflow/runs/fixture-high/%2Fetc%2Fpasswd",
    "/clusterflow/runs/fixture-high//etc/passwd",
    "/clusterflow/runs/fixture-high/prepare/features.npy",
    "/clusterflow/runs/escape/manifest.json",  # a run directory that is a symlink out of the data root
    "/clusterflow/runs/escape/report/report.html",
    "/clusterflow/runs/fixture-low/report/report.html",  # a file that is a symlink out of it
])
def test_it_refuses_traversal_absolute_paths_and_symlinks_out_of_the_data_root(standalone, path):
    status, _, body = raw_get(standalone, path)
    assert status in (400, 404) and b"<title>Not served</title>" in body, (path, status, body[-300:])
    assert SECRET.encode() not in body and b"root:" not in body


@pytest.mark.parametrize("query", ["sort=bogus", "order=sideways", "metric=accuracy", "sort=run_id%27%3E"])
def test_the_runs_page_answers_a_bad_sort_order_or_metric_with_400_and_what_to_give(standalone, query):
    status, headers, body = raw_get(standalone, f"/clusterflow/runs?{query}")
    assert status == 400 and b"<title>Bad request</title>" in body, (query, status, body[-300:])
    assert b"sort by one of" in body and b"order asc or desc" in body
    assert b"run_id'>" not in body and headers["content-security-policy"] == PROMISED_CSP


def snapshot(*folders: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.lstat().st_mtime_ns) for folder in folders for p in [folder, *folder.rglob("*")])


def test_it_never_writes(standalone, finished):
    run_id = spec.safe_run_id(finished["dag_run_id"])
    # The runs it reads (the scheduled run that unpausing started may still be writing its own).
    served = [standalone.data / "runs" / r for r in (run_id, *FIXTURE_ARI)] + [standalone.data.parent / "outside"]
    before = snapshot(*served)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = standalone.session.request(method, f"{standalone.url}/clusterflow/runs/{run_id}/report/report.html",
                                            data=b"x", timeout=30)
        assert answer.status_code == 405, method
    for path in report_paths(finished):
        assert raw_get(standalone, path)[0] == 200
    assert snapshot(*served) == before


# --- in the browser --------------------------------------------------------------------------------

def wait_for(browser, css: str, timeout: float = 30):
    return WebDriverWait(browser, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def rows(browser) -> list[str]:
    return [row.get_attribute("data-run") for row in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")]


@pytest.fixture(scope="module")
def logged_in(browser, standalone, artifacts):
    """The browser, logged into Airflow through its login form."""
    browser.get(standalone.url + "/")
    password = json.loads((standalone.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    wait_for(browser, "input[name=username]").send_keys("admin")
    browser.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: "/auth/login" not in d.current_url)
    wait_for(browser, "a[href$='/plugin/clusterflow-runs']")
    browser.save_screenshot(str(artifacts / "1-home.png"))
    return browser


def test_the_report_tab_of_a_finished_run_shows_its_table_and_figures(logged_in, standalone, finished, artifacts):
    browser = logged_in
    started = time.monotonic()
    browser.get(f"{standalone.url}/dags/{DAG_ID}/runs/{quote(finished['dag_run_id'], safe='')}")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.LINK_TEXT, "Report")).click()
    browser.switch_to.frame(wait_for(browser, "iframe[title=Report]"))
    try:
        table = wait_for(browser, "table#metrics")
        assert table.is_displayed() and table.size["height"] > 0
        variants = [row.get_attribute("data-variant") for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert sorted(variants) == ["k-means++", "pca", "random"]
        images = browser.find_elements(By.CSS_SELECTOR, "figure img")
        assert len(images) == 3  # decision regions, cluster centers, contingency heat map
        for image in images:
            browser.execute_script("arguments[0].scrollIntoView()", image)
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
            assert image.is_displayed() and image.size["width"] > 100 and image.size["height"] > 100
        width, visible = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width <= visible, "the report scrolls horizontally on a laptop screen"
        browser.execute_script("window.scrollTo(0, 0)")
    finally:
        browser.switch_to.default_content()
    browser.save_screenshot(str(artifacts / "2-report-tab.png"))
    print(f"report tab: {time.monotonic() - started:.1f} s")


def test_the_runs_page_compares_runs_and_sorts_by_a_column(logged_in, standalone, finished, artifacts):
    browser = logged_in
    browser.get(standalone.url + "/")
    wait_for(browser, "a[href$='/plugin/clusterflow-runs']").click()
    browser.switch_to.frame(wait_for(browser, "iframe[title=Reports]"))
    try:
        wait_for(browser, "table#runs")
        run_id = spec.safe_run_id(finished["dag_run_id"])
        assert {run_id, *FIXTURE_ARI} <= set(rows(browser)) and "escape" not in rows(browser)
        trend = browser.find_element(By.CSS_SELECTOR, "svg#trend")
        assert trend.is_displayed() and trend.size["width"] > 200 and trend.size["height"] > 50
        browser.find_element(By.CSS_SELECTOR, "th[data-key=adjusted_rand] a").click()
        WebDriverWait(browser, 30).until(lambda d: "sort=adjusted_rand" in d.execute_script("return location.href"))
        ordered = [r for r in rows(browser) if r in FIXTURE_ARI or r == run_id]
        assert ordered[0] == "fixture-high" and ordered[-1] == "fixture-low"
        header = browser.find_element(By.CSS_SELECTOR, "th[data-key=adjusted_rand]")
        assert header.get_attribute("aria-sort") == "descending"
        browser.find_element(By.CSS_SELECTOR, "th[data-key=adjusted_rand] a").click()
        WebDriverWait(browser, 30).until(lambda d: "order=asc" in d.execute_script("return location.href"))
        assert [r for r in rows(browser) if r in FIXTURE_ARI][0] == "fixture-low"
        browser.switch_to.default_content()
        browser.save_screenshot(str(artifacts / "3-runs-page-sorted.png"))
        browser.switch_to.frame(wait_for(browser, "iframe[title=Reports]"))
        browser.find_element(By.CSS_SELECTOR, f"tr[data-run='{run_id}'] a").click()
        wait_for(browser, "table#metrics")  # its report, opened from the runs page
    finally:
        browser.switch_to.default_content()
    browser.save_screenshot(str(artifacts / "4-report-from-the-runs-page.png"))


def test_the_readme_promises_the_policy_this_module_checks():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"`Content-Security-Policy: {PROMISED_CSP}`" in readme
