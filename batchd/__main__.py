"""`python -m batchd` is the `batchd` command."""

import sys

from batchd.cli import main

sys.exit(main())
