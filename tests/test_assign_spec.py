"""The assign step in the spec, the runner and the local CLI (no engine needed)."""

from __future__ import annotations

from click.testing import CliRunner

from clusterflow import cli, pinning, spec
from clusterflow_steps.contract import ASSIGN, IMAGES, STEPS, RunId


def test_assign_is_a_step_image_but_no_stage_of_the_training_pipeline():
    assert IMAGES == (*STEPS, ASSIGN) and ASSIGN not in spec.ROLES
    assert [t.step for stage in spec.stages(RunId("r"), spec.PipelineParams(), spec.local_images("1")) for t in stage] \
        == ["prepare", "cluster", "cluster", "cluster", "evaluate", "report"]
    assert set(pinning.PUBLISHED) == {"core", "base", *IMAGES}
    assert dict(pinning.local("1", (ASSIGN,)).refs) == {ASSIGN: "clusterflow/assign:1"}


def test_the_assign_task_scores_a_mounted_dataset_into_the_model_run(tmp_path):
    data = tmp_path / "new.npy"
    task = spec.assign_task(RunId("r7"), str(data), "clusterflow/assign:1", allow_failed_gate=True)
    assert task.name == ASSIGN and task.command == ("--run-id", "r7", "--dataset", "/input/new.npy",
                                                    "--allow-failed-gate")
    assert task.role.commits_cache and task.role.result is not None and task.role.result.name == "summary.json"
    assert spec.mounts("/d", str(data))[2] == spec.Mount(str(data), "/input/new.npy", read_only=True)
    assert spec.assign_task(RunId("r7"), "digits", "i").command == ("--run-id", "r7", "--dataset", "digits")


def test_assign_refuses_a_model_run_that_is_not_there_before_any_engine(tmp_path):
    result = CliRunner().invoke(cli.main, ["assign", "--data-dir", str(tmp_path), "--model-run", "nope",
                                           "--dataset", "digits"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"clusterflow: no run nope in {tmp_path}: give the --model-run of a finished " \
                                    "run (and its --data-dir)"
    assert not (tmp_path / "runs").exists()


def test_assign_refuses_a_bad_run_id_in_one_line(tmp_path):
    result = CliRunner().invoke(cli.main, ["assign", "--data-dir", str(tmp_path), "--model-run", "../x",
                                           "--dataset", "digits"])
    assert result.exit_code == 2 and "invalid run id '../x'" in result.stderr


def test_assign_refuses_a_dataset_file_that_is_not_there(tmp_path):
    (tmp_path / "runs" / "m").mkdir(parents=True)
    result = CliRunner().invoke(cli.main, ["assign", "--data-dir", str(tmp_path), "--model-run", "m",
                                           "--dataset", str(tmp_path / "no.npy")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"clusterflow: dataset {str(tmp_path / 'no.npy')!r} is neither digits nor "
                                     "synthetic nor an existing file: check the path")
