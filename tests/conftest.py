"""Fixtures every test directory can use, each started once per session."""

pytest_plugins = ["tests.fixtures.root", "tests.fixtures.docker", "tests.fixtures.airflow",
                  "tests.fixtures.registry", "tests.fixtures.engines"]
