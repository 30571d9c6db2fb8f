"""``python -m certfleet.coordinator.cli``: the ``certfleet`` command."""

import sys

from . import main

sys.exit(main())
