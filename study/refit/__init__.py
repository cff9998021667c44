"""After the search: the pick trained again on all the data, shipped only if it is better.

``plan``: which trials the refit runs (the pick's configuration on the refit's data and epochs,
at a few learning rates for a short check), which one continues, whether the result replaces the
pick, and whether the refit fits in memory: pure functions of the study's summary and config.
``runner``: the refit's trials on Ray Tune (resources, checkpoints, MLflow runs under the study's
parent run, resumable after a crash), the registration of a better refit and the one score on
the test set. ``docs/refit.md`` says what a user sees and why the rule is what it is.
"""
