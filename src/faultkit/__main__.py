"""``python -m faultkit`` is the ``faultkit`` command."""
import sys

from faultkit.cli import main

sys.exit(main())
