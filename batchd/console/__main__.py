"""`python -m batchd.console token --name NAME [--role operator]`."""

from batchd.console.command import main

raise SystemExit(main())
