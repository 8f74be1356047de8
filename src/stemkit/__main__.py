"""``python -m stemkit`` runs the command line."""

import sys

from stemkit.cli.main import main

sys.exit(main())
