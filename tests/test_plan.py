"""The DAG run's plan without Airflow: rendered from the spec, through XCom and back unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clusterflow import pinning, plan, spec

LIMITS = spec.StepLimits(512 << 20, 1.5)
AIRFLOW_RUN_ID = "manual__2026-11-24T10:00:00+00:00"


def rendered(values: dict | None = None, source: str = "/srv/clusterflow") -> plan.Plan:
    return plan.render_plan(values or {}, AIRFLOW_RUN_ID, source, pinning.local("1.2.3"), LIMITS)


def test_the_plan_module_imports_no_airflow():
    code = "import sys, clusterflow.plan; print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("values", [{}, {"dataset": "synthetic", "n_samples": 500, "inits": ["pca", "random"],
                                         "min_ari": 0.5, "minibatch": True}])
def test_a_plan_survives_its_xcom_form(values):
    found = rendered(values)
    xcom = json.loads(json.dumps(found.to_xcom()))  # what Airflow stores
    assert plan.Plan.from_xcom(xcom) == found
    assert plan.Plan.from_xcom(xcom).to_xcom() == xcom


def test_the_plan_is_the_spec_rendered_once():
    found = rendered({"inits": ["random", "pca"]})
    run_id = spec.safe_run_id(AIRFLOW_RUN_ID)
    params = spec.PipelineParams(inits=("random", "pca"))
    assert found.run_id == run_id and found.variants == ["random", "pca"]
    assert found.tasks == tuple(t for stage in spec.stages(run_id, params, spec.local_images("1.2.3")) for t in stage)
    assert found.mounts == tuple(spec.mounts("/srv/clusterflow", params.dataset))
    assert found.commit_mounts == tuple(spec.mounts("/srv/clusterflow", params.dataset, commit=True))
    assert found.task("cluster", "pca").command[-4:] == ("--init", "pca", "--variant", "pca")
    assert {n: t["commits_cache"] for n, t in found.to_xcom()["tasks"].items()} == {
        "prepare": True, "cluster[random]": True, "cluster[pca]": True, "evaluate": True, "report": False}


@pytest.mark.parametrize("values, source, message", [
    ({"colour": "red"}, "/srv/d", "unknown param(s) colour"),
    ({"n_init": 0}, "/srv/d", "n_init 0"),
    ({}, "../up", "data source '../up': give an absolute host path or a Docker volume name"),
])
def test_the_plan_refuses_bad_params_and_data_sources_in_one_line(values, source, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rendered(values, source)


@pytest.mark.parametrize("commit", [False, True])
def test_a_container_is_rendered_from_the_plans_task(commit):
    found = rendered()
    task = found.task("evaluate")
    launched = task.commit() if commit else task
    settings = plan.render_container(found, spec.DAG_ID, task, 3, "sha256:" + "a" * 64, commit=commit)
    assert settings == {
        "image": task.image, "command": list(launched.command),
        "environment": spec.step_environment(task.image, "sha256:" + "a" * 64),
        "labels": spec.labels(spec.DAG_ID, found.run_id, launched, 3),
        "container_name": spec.container_name(found.run_id, launched),
        "mounts": list(found.commit_mounts if commit else found.mounts),
        "mem_limit": 512 << 20, "nano_cpus": 1_500_000_000,
    }


def test_every_step_has_a_role_and_only_evaluate_gates_and_only_report_runs_after_a_breach():
    assert set(spec.ROLES) == set(spec.STEPS)
    assert [s for s, r in spec.ROLES.items() if r.gate_exit_code == spec.QUALITY_GATE_EXIT] == ["evaluate"]
    assert [s for s, r in spec.ROLES.items() if r.runs_after_gate_failure] == ["report"]
    assert [s for s, r in spec.ROLES.items() if r.per_variant] == ["cluster"]
    task = rendered().task("evaluate")
    assert task.keeps_outputs(0) and task.keeps_outputs(spec.QUALITY_GATE_EXIT) and not task.keeps_outputs(1)
    assert not rendered().task("report").keeps_outputs(spec.QUALITY_GATE_EXIT)


def test_a_scoring_plan_survives_its_xcom_form_with_the_assign_image_alone():
    """The scoring DAG's plan launches assign only: its XCom records that one image, and reads back."""
    from clusterflow_steps.contract import ASSIGN, RunId

    images = pinning.local("1.2.3", (ASSIGN,))
    source = "/srv/clusterflow"
    found = plan.Plan(run_id=RunId("r1"), airflow_run_id=AIRFLOW_RUN_ID, params=spec.PipelineParams(),
                      data_source=source, images=images, limits=LIMITS,
                      tasks=(spec.assign_task(RunId("r1"), "digits", images.refs[ASSIGN]),),
                      mounts=tuple(spec.mounts(source)), commit_mounts=tuple(spec.mounts(source, commit=True)))
    xcom = json.loads(json.dumps(found.to_xcom()))
    assert plan.Plan.from_xcom(xcom) == found


def test_a_training_plan_whose_images_lack_a_step_is_refused():
    xcom = json.loads(json.dumps(rendered().to_xcom()))
    del xcom["images"]["refs"]["report"]
    with pytest.raises(ValueError, match="not a record of resolved step images"):
        plan.Plan.from_xcom(xcom)
