"""`python -m mtrec`: the same as the `mtrec` command."""

import sys

from mtrec.cli.main import main

sys.exit(main())
