"""The step operators around their containers, with the launch stubbed (no Docker engine): what
each step returns, pushes and commits is its spec.Role (see operator_stub_probe.py, run in the Airflow venv)."""

from __future__ import annotations

from clusterflow import spec
from tests.airflow.conftest import stub_probe_fixture

seen = stub_probe_fixture("operator_stub_probe.py", "OPERATOR-PROBE-JSON: ")


def test_every_step_but_the_report_launches_its_container_then_its_cache_commit(seen):
    for name in ("prepare", "cluster", "evaluate"):
        step, commit = seen[name]["launched"]
        assert commit == [*step, spec.COMMIT_CACHE_FLAG], name
    assert seen["cluster"]["launched"][0][-4:] == ["--init", "pca", "--variant", "pca"]
    assert seen["cluster"]["container_name"] == "clusterflow.r1.cluster.pca.commit"
    assert seen["cluster"]["nano_cpus"] == 1_000_000_000
    assert seen["report"]["launched"] == [["--run-id", "r1", "--cache"]]  # no commit: commits_cache is off


def test_evaluate_returns_its_summary_and_pushes_the_gate_verdict(seen):
    assert seen["evaluate"]["returned"] == {"best": "pca"} and seen["evaluate"]["error"] is None
    assert seen["evaluate"]["pushed"]["evaluate/quality_gate"] == {"passed": True, "reason": None}
    assert seen["prepare"]["returned"] is None and "prepare/quality_gate" not in seen["prepare"]["pushed"]


def test_a_gate_breach_fails_evaluate_with_its_reason_and_still_commits_its_metrics(seen):
    gated = seen["gated"]
    assert gated["error"] == ("AirflowFailException: quality gate failed (exit 3): "
                              "Error: quality gate failed for best variant pca")
    assert gated["pushed"]["evaluate/quality_gate"] == {"passed": False,
                                                        "reason": "Error: quality gate failed for best variant pca"}
    assert len(gated["launched"]) == 2
    assert gated["pushed"]["evaluate/return_value"] == {"best": "pca", "quality_gate": {"passed": False}}


def test_the_report_runs_after_a_verdict_and_returns_its_path_else_skips(seen):
    assert seen["report"]["returned"] == "runs/r1/report/report.html"
    alone = seen["report_alone"]
    assert alone["error"] == ("AirflowSkipException: nothing to report: evaluate produced no metrics "
                              "(an earlier step failed)")
    assert alone["launched"] == []


def test_evaluate_annotates_the_model_asset_with_the_best_variants_fit(seen):
    (extra,) = seen["evaluate_model"]["extras"].values()
    assert extra == {"run_id": "r1", "airflow_run_id": "r1", "data_source": "/srv/d", "best": "pca", "ranked_by": None,
                     "metrics": None, "quality_gate_passed": None, "image": "clusterflow/cluster:t",
                     "image_digest": "sha256:" + "a" * 64, "cache_key": None}  # no /srv/d here: no manifest


def test_the_report_annotates_the_metrics_asset_from_evaluates_summary_after_a_breach(seen):
    (extra,) = seen["report_metrics"]["extras"].values()
    assert extra["best"] == "pca" and extra["quality_gate_passed"] is False
    assert extra["image"] == "clusterflow/evaluate:t" and seen["report_metrics"]["error"] is None


def test_plan_reads_the_data_root_tag_and_limits_once_and_every_try_launches_what_it_read(seen):
    """The DAG file parsed under one env, ``plan`` run under another, each step's two tries under a
    third (and a data-root Variable set by then): every container, step and commit, on every try,
    is launched with plan's settings, and none with the parse-time or later ones."""
    planned = seen["settings_once"]["settings"]["planned"]
    launched = seen["settings_once"]["launched"]
    assert sorted(launched) == ["cluster[pca]", "evaluate", "prepare", "report"]
    for name, containers in launched.items():
        step = name.split("[")[0]
        commits = 0 if step == "report" else 1
        assert [c["try_number"] for c in containers] == [1] * (1 + commits) + [2] * (1 + commits), name
        for container in containers:
            assert container["image"] == f"clusterflow/{step}:planned-tag", name
            assert {m["Source"] for m in container["mounts"]} == {"planned-volume", "planned-volume-cache"}, name
            assert container["mem_limit"] == 1 << 30 and container["nano_cpus"] == 1_000_000_000, name
            assert container["environment"]["CLUSTERFLOW_IMAGE"] == f"clusterflow/{step}:planned-tag", name
    assert planned == {"CLUSTERFLOW_DATA_SOURCE": "planned-volume", "CLUSTERFLOW_IMAGE_TAG": "planned-tag",
                       "CLUSTERFLOW_STEP_MEMORY": "1g", "CLUSTERFLOW_STEP_CPUS": "1"}
