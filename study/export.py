"""``python -m study.export``: Take a study's best (or a chosen) adapter out as a directory others load. See :mod:`study.deploy.export`."""

import sys

from .deploy.export import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
