"""Old path of :mod:`faultkit.detect.transport`, kept so existing imports work."""
from faultkit.detect.transport import *  # noqa: F401,F403
from faultkit.detect.transport import __all__  # noqa: F401
