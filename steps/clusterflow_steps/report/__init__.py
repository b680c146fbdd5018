"""The report step: one self-contained HTML page documenting a run.

``inputs`` loads the run's artifacts (evaluate's projection.npz included), ``figures`` draws
(matplotlib, Agg; numpy only, no scikit-learn), ``page`` assembles the HTML, ``build`` ties them
together and ``cli`` is the click shell.
"""
