"""``python -m pirus_jupyter.cli``, the same as ``jupyter pirus``."""

import sys

from . import main

sys.exit(main())
