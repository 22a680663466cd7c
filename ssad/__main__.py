"""``python -m ssad``: the ``ssad`` command (:mod:`ssad.cli`)."""

import sys

from ssad.cli import main

if __name__ == "__main__":
    sys.exit(main())
