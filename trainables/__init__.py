"""One trial: data → model → training loop. Runs with or without Ray.

The study reaches this package only through ``trainables.lora.train`` (the Ray Tune entry
point) and the typed config in ``trainables.config``.
"""

__all__ = ["config", "data", "model", "dropout", "lora"]
