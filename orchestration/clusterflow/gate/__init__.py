"""The launch gate: the only holder of the Docker socket; forwards a request only when it is
exactly what a clusterflow step container needs (see :mod:`clusterflow.gate.policy`)."""
