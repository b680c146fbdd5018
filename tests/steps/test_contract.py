"""The artifact contract: importable without numpy, one Projection that saves byte-stable and loads
checked, one ranking rule."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from clusterflow_steps import contract
from clusterflow_steps.contract import ContractError, Projection


def test_the_contract_imports_and_applies_its_rules_without_numpy(tmp_path):
    """The orchestration and the UI import it where numpy is absent."""
    code = ("import sys\n"
            "sys.modules['numpy'] = None\n"
            "from pathlib import Path\n"
            "from clusterflow_steps import contract\n"
            f"layout = contract.RunLayout(Path({str(tmp_path)!r}), 'r1')\n"
            "print(layout.path(contract.PROJECTION).relative_to(layout.data_root).as_posix())\n"
            "print(contract.ranked({'a': {'inertia': 2.0}, 'b': {'inertia': 1.0}}, 'inertia'))\n"
            "print(contract.gate_failed({}, {'exit_status': contract.QUALITY_GATE_EXIT}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["runs/r1/evaluate/projection.npz", "['b', 'a']", "True"]


def projection(**changes: object) -> Projection:
    rng = np.random.default_rng(0)
    made = Projection(points=rng.normal(size=(30, 2)), centroids=rng.normal(size=(3, 2)),
                      regions=rng.integers(0, 3, size=(5, 4)).astype(np.uint8), extent=(-1.0, 1.0, -2.0, 2.0),
                      seed=7, n_samples=40, n_fitted=30)
    return dataclasses.replace(made, **changes)


def test_a_projection_saves_byte_stable_and_loads_as_it_was(tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    projection().save(first)
    projection().save(second)
    assert first.read_bytes() == second.read_bytes()  # no timestamps: cache keys downstream stay
    with np.load(first, allow_pickle=False) as archive:
        assert archive.files == [field.name for field in dataclasses.fields(Projection)]
        assert archive["extent"].dtype == np.float64 and archive["seed"].dtype == np.int64
    loaded = Projection.load(first)
    for field in ("points", "centroids", "regions"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(projection(), field))
    assert loaded.regions.dtype == np.uint8 and loaded.n_clusters == 3
    assert (loaded.extent, loaded.seed, loaded.n_samples, loaded.n_fitted) == ((-1.0, 1.0, -2.0, 2.0), 7, 40, 30)


@pytest.mark.parametrize("changes, says", [
    ({"points": np.zeros((3, 3))}, "holds points of shape (3, 3) and centroids of shape (3, 2), not (n, 2)"),
    ({"regions": np.zeros((5, 4))}, "holds a region grid of shape (5, 4) (float64) and extent (4,)"),
    ({"centroids": np.full((3, 2), np.nan)}, "holds non-finite coordinates"),
    ({"regions": np.full((5, 4), 3)}, "has region labels outside the 3 clusters"),
])
def test_a_damaged_projection_is_one_contract_error_naming_evaluate(tmp_path, changes, says):
    path = projection(**changes).save(tmp_path / "p.npz")
    with pytest.raises(ContractError) as refused:
        Projection.load(path)
    assert str(refused.value) == f"{path} {says}; re-run the evaluate step"


def test_a_missing_projection_says_which_step_writes_it(tmp_path):
    with pytest.raises(ContractError, match=r"^missing input .*p\.npz: run the evaluate step for this run id first$"):
        Projection.load(tmp_path / "p.npz")


def test_variants_rank_by_lower_is_better_with_undefined_last_and_ties_by_name():
    rows = {"c": {"inertia": 3.0, "silhouette": None}, "b": {"inertia": 1.0, "silhouette": 0.2},
            "a": {"inertia": 1.0, "silhouette": 0.5}, "d": {"inertia": True}}
    assert contract.ranked(rows, "inertia") == ["a", "b", "c", "d"]  # lowest first; a bool is no score
    assert contract.ranked(rows, "silhouette") == ["a", "b", "c", "d"]  # highest first
    assert contract.ranked(rows, "fit_seconds") == ["a", "b", "c", "d"]  # nobody has it: by name
