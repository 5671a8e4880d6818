"""``python -m m2mv`` = the ``m2mv`` command (and ``accelerate launch -m m2mv train ...``)."""

import sys

from m2mv.cli import main

sys.exit(main())
