"""Old path of :mod:`faultkit.balance`, kept so existing imports work."""
from faultkit.balance import *
from faultkit.balance import __all__  # noqa: F401
