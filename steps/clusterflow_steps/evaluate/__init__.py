"""The evaluate step: score every cluster variant of a run, pick the best, apply the quality gate.

``metrics`` scores and ranks variants, ``gate`` checks thresholds (both functional cores on
arrays and dicts); ``cli`` is the click shell.
"""
