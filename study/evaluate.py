"""``python -m study.evaluate``: Score an exported adapter on a labelled file and log the result to its study. See :mod:`study.deploy.evaluate`."""

import sys

from .deploy.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
