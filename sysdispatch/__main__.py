"""``python -m sysdispatch``: the same as the ``sysdispatch`` console script."""

import sys

from .cli import main

sys.exit(main())
