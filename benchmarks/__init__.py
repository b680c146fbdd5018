"""clusterflow's benchmark harness: ``python -m benchmarks`` (see ``--help`` and RESULTS.md).

Every row is measured in the one invocation that prints it, as the median (min, max) of repeated
runs: the bare scikit-learn work in one process against the same work as containers (local
runner, ``airflow dags test``, a scheduler-driven run), per-step overhead and work, the images,
and the scale runs. Speed targets live here, as printed ratios, not in timed tests.
"""
