"""The scoring DAG's plan task with stub Asset events (scoring_stub_probe.py in the Airflow venv; no Docker)."""

from __future__ import annotations



from tests.airflow.conftest import stub_probe_fixture

seen = stub_probe_fixture("scoring_stub_probe.py", "SCORING-PROBE-JSON: ")


def test_a_model_update_scores_the_default_dataset_with_the_triggering_run(seen):
    triggered = seen["triggered"]
    assert triggered["error"] is None and triggered["returned"] == "r2"
    (assign,) = triggered["plan"]["tasks"].values()
    assert assign["step"] == "assign" and assign["image"].startswith("clusterflow/assign:")
    assert assign["command"] == ["--run-id", "r2", "--dataset", "digits"]


def test_by_hand_the_newest_passed_model_scores_the_param_dataset(seen):
    by_hand = seen["by_hand"]
    assert by_hand["error"] is None and by_hand["returned"] == "r2"  # r3's gate failed
    (assign,) = by_hand["plan"]["tasks"].values()
    assert assign["command"][-2:] == ["--dataset", "synthetic"]


def test_without_a_param_the_configured_dataset_is_scored(seen):
    (assign,) = seen["variable"]["plan"]["tasks"].values()
    assert assign["command"][-2:] == ["--dataset", "/data/inputs/new.csv"]


def test_refusals_are_one_line_task_failures(seen):
    assert seen["no_model"]["error"].startswith("AirflowFailException: no model whose quality gate passed")
    assert seen["missing"]["error"].startswith("AirflowFailException: dataset '/nonexistent/x.csv' is missing")
    assert seen["no_model"]["plan"] is None and seen["missing"]["plan"] is None
