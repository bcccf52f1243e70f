"""`python -m nnserve.cli ...`, the same as the `nnserve` command."""

import sys

from .main import main

sys.exit(main())
