"""``python -m mmcl.cli``: the ``mmcl`` command (torchrun and accelerate launch run it this way)."""

import sys

from . import main

sys.exit(main())
