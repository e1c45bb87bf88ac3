"""Rate limits: :class:`RateLimiter`, GCRA in C++ with per-key buckets in native memory.

See :class:`faultkit.contain._rate.RateLimiter`; refusals raise
:class:`~faultkit.RateLimitedError`, whose ``retry_after`` is the wait in seconds.
"""
from faultkit.contain._rate import RateLimiter
from faultkit.errors import RateLimitedError

__all__ = ["RateLimiter", "RateLimitedError"]
