"""Many trials: a whole hyperparameter study of the trainable (``trainables``) on Ray Tune.

The flow, one subpackage each: ``config`` (the study YAML, validated once) → ``search`` (space,
searchers, ASHA) → ``storage`` (the study's files, fault tolerance) → ``console`` (what the
terminal shows) → ``tracking`` (MLflow, the summary) → ``deploy`` (export, registry, serving) →
``refit`` (the pick trained again on all the data, shipped if better; the one test score).
The commands sit at the top: ``python -m study.run`` (run or resume a study), ``python -m
study.export``, ``python -m study.predict``, ``python -m study.evaluate``.
"""
