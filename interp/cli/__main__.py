"""``python -m interp.cli``: the same as the ``interp`` command."""

import sys

from interp.cli.app import main

sys.exit(main())
