"""``python -m app ...`` = ``vision ...`` (e.g. ``torchrun --nproc_per_node=2 -m app train``)."""

import sys

from app.cli import main

sys.exit(main())
