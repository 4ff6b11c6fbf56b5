"""``python -m ope``: see :mod:`ope.cli`."""

import sys

from ope.cli import main

if __name__ == "__main__":
    sys.exit(main())
