"""The Asset events' extra and how the scoring DAG picks its model and dataset (pure, no Airflow)."""

from __future__ import annotations

import pytest

from clusterflow import lineage

SUMMARY = {"best": "k-means++", "ranked_by": "adjusted_rand", "metrics": {"adjusted_rand": 0.47},
           "quality_gate": {"passed": True, "failures": [], "thresholds": {}}}


def extra(run_id: str | None = "r1", passed: bool | None = True) -> dict:
    summary = {**SUMMARY, "quality_gate": {"passed": passed}} if passed is not None else None
    return lineage.event_extra(run_id=run_id or "", airflow_run_id="manual__x", data_source="/srv/d",
                               summary=summary, image="clusterflow/cluster:1", image_digest="sha256:ab",
                               cache_key="c0ffee")


def test_an_event_extra_names_the_run_its_best_variant_metrics_image_and_cache_key():
    assert extra() == {"run_id": "r1", "airflow_run_id": "manual__x", "data_source": "/srv/d", "best": "k-means++",
                       "ranked_by": "adjusted_rand", "metrics": {"adjusted_rand": 0.47}, "quality_gate_passed": True,
                       "image": "clusterflow/cluster:1", "image_digest": "sha256:ab", "cache_key": "c0ffee"}
    assert extra(passed=None)["best"] is None and extra(passed=None)["quality_gate_passed"] is None


def test_the_newest_model_whose_gate_passed_is_chosen():
    assert lineage.newest_model([extra("r1"), extra("r2"), extra("r3", passed=False), None])["run_id"] == "r2"


@pytest.mark.parametrize("extras", [[], [None], [extra(passed=False)], [extra(run_id=None)]])
def test_no_model_whose_gate_passed_is_refused_in_one_line(extras):
    with pytest.raises(lineage.NoModel, match=r"^no model whose quality gate passed .*: run digits_kmeans") as err:
        lineage.newest_model(extras)
    assert "\n" not in str(err.value)


def test_the_dataset_is_the_param_else_the_variable_else_the_env_else_digits():
    env = {lineage.ASSIGN_DATASET_ENV: "/srv/e.csv"}
    assert lineage.assign_dataset("p.csv", "v.csv", env) == "p.csv"
    assert lineage.assign_dataset(None, "v.csv", env) == "v.csv"
    assert lineage.assign_dataset("", None, env) == "/srv/e.csv"
    assert lineage.assign_dataset(None, None, {}) == "digits"


def test_a_missing_host_dataset_is_refused_in_one_line(tmp_path):
    present = tmp_path / "x.csv"
    present.write_text("1,2\n")
    assert lineage.dataset_problem("digits") is None and lineage.dataset_problem(str(present)) is None
    assert lineage.dataset_problem("/data/inputs/x.csv") is None  # on the data root: the step checks it
    problem = lineage.dataset_problem(str(tmp_path / "gone.csv"))
    assert problem is not None and problem.startswith(f"dataset '{tmp_path / 'gone.csv'}' is missing")


def test_an_event_extra_holds_plain_strings_even_for_a_run_id_type():
    """Airflow serialises an Asset event's extra with msgpack, which refuses str subclasses (RunId)."""
    from clusterflow_steps.contract import RunId

    found = lineage.event_extra(run_id=RunId("r1"), airflow_run_id="manual__x", data_source="/srv/d", summary=None,
                                image="clusterflow/evaluate:0.1.0", image_digest=None, cache_key=None)
    assert type(found["run_id"]) is str and found["run_id"] == "r1"
