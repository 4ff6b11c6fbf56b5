"""``python -m banditroute`` works like the ``banditroute`` command."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
