"""What to try next: the search space, the searchers (by name, ``registry``) and ASHA.

``space`` turns the study config into Tune distributions and the seed recipes; ``registry`` maps a
searcher name to its builder and builds the searcher + scheduler pair ``study.run`` hands the
Tuner; ``asha``, ``tpe``, ``rung_tpe`` are the pieces; ``journal`` keeps the searcher's Optuna study
as a file others can read. Nothing here touches files or MLflow.
"""
