"""Circuit breakers: stop calling a dependency that keeps failing, probe it, resume.

The state machine and its sliding windows are C++ (``csrc/faultkit/breaker.h``),
bound by Cython in :mod:`faultkit.contain._breaker`; see :class:`CircuitBreaker` for
the model (resilience4j's) and the thread-safety argument.
"""
from faultkit.contain._breaker import CircuitBreaker
from faultkit.errors import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitOpenError"]
