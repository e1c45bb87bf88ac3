"""Old path of :mod:`faultkit.detect.transport`, kept so existing imports work."""
from faultkit.detect.transport import *
from faultkit.detect.transport import __all__  # noqa: F401
