"""``python -m dipkd.doctor``: the same as ``dipkd doctor``."""
import sys

from .command import main

sys.exit(main())
