"""The report step: one self-contained HTML page documenting a run.

``inputs`` loads the run's artifacts, ``figures`` draws (matplotlib, Agg), ``page`` assembles the
HTML, ``build`` ties them together and ``cli`` is the click shell.
"""
