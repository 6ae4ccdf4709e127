"""``python -m splitc.cli``: the ``splitc`` command."""

import sys

from splitc.cli import main

sys.exit(main())
