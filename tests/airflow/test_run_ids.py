"""Airflow run ids become run ids on the data root: the contract's rule, never shared."""

from __future__ import annotations

import pytest

from clusterflow import spec


@pytest.mark.parametrize("airflow_run_id", [
    "manual__2026-11-24T10:00:00+00:00", "scheduled__2026-11-24T22:00:00+00:00",
    "asset_triggered__2026-11-24T10:00:00.123456+00:00", "..sneaky/../path", "x" * 300, ":::", "é"])
def test_any_airflow_run_id_becomes_a_valid_run_id(airflow_run_id):
    run_id = spec.safe_run_id(airflow_run_id)
    assert spec.RUN_ID.problem(run_id) is None
    assert len(run_id) <= 128 and "/" not in run_id and ".." not in run_id


def test_a_valid_run_id_is_kept_and_an_invalid_one_keeps_its_readable_part():
    assert spec.safe_run_id("nightly-1") == "nightly-1"
    assert spec.safe_run_id("manual__2026-11-24T10:00:00+00:00").startswith("manual__2026-11-24T10-00-00-00-00-")


def test_run_ids_that_differ_only_in_disallowed_characters_stay_apart():
    a = spec.safe_run_id("manual__2026-11-24T10:00:00+00:00")
    b = spec.safe_run_id("manual__2026-11-24T10-00-00+00:00")
    c = spec.safe_run_id("manual__2026-11-24T10:00:00-00:00")
    assert len({a, b, c}) == 3
    long_a, long_b = spec.safe_run_id("y" * 200 + ":a"), spec.safe_run_id("y" * 200 + ":b")
    assert long_a != long_b


def test_the_same_airflow_run_id_always_maps_to_the_same_directory():
    value = "manual__2026-11-24T10:00:00+00:00"
    assert spec.safe_run_id(value) == spec.safe_run_id(value)
