"""``python -m banditroute.service --config routes.toml ...`` (the same options as ``serve``)."""

import sys

from .app import main

sys.exit(main())
