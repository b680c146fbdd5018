"""The assign step: score a new dataset with the best model of a finished run.

``model`` reads ``model.npz`` and assigns rows to clusters with numpy alone (each algorithm's own
predict rule), ``summary`` sums an assignment up (both functional cores); ``cli`` is the click shell.
"""
