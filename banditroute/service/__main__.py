"""``python -m banditroute.service --config routes.toml ...`` (the same options as ``banditroute serve``)."""

import sys

from ..cli.serve import main

sys.exit(main())
