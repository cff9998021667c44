"""``python -m study.predict``: Label texts with an exported adapter, a merged model or a checkpoint. See :mod:`study.deploy.predict`."""

import sys

from .deploy.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
