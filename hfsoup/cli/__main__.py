"""`python -m hfsoup.cli` (and `torchrun -m hfsoup.cli eval ...`): the same entry point as the `hfsoup` command."""

import sys

from . import main

sys.exit(main())
