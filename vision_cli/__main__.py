"""``python -m vision_cli ...`` = ``vision ...``
(e.g. ``torchrun --nproc_per_node=2 -m vision_cli train``)."""

import sys

from vision_cli.cli import main

sys.exit(main())
