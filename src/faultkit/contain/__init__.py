"""Contain: keep a fault inside its failure domain.

- :mod:`~faultkit.contain.domains`: :class:`FailureDomains`, the domain tree;
  isolation reaching attached balancers; placement of replicas across domains.
- :mod:`~faultkit.contain.policy`: :class:`IsolationPolicy`, isolate a domain
  on correlated failures, restore it, refuse past a cap.
- :mod:`~faultkit.contain.outlier`: :class:`OutlierDetector`, eject hosts whose
  request results make them outliers (Envoy's outlier detection).
- :mod:`~faultkit.contain.breaker`: :class:`CircuitBreaker`, fail fast on a failing dependency.
- :mod:`~faultkit.contain.bulkhead`: :class:`Bulkhead`, cap the calls in flight into one dependency.
- :mod:`~faultkit.contain.rate`: :class:`RateLimiter`, GCRA rate limits, per key.
- :mod:`~faultkit.contain.retry`: :class:`Retry`, :class:`RetryBudget`, call again, within a deadline and a budget.
- :mod:`~faultkit.contain.hedge`: :class:`Hedge`, hedged requests to a second replica.
- :mod:`~faultkit.contain.stack`: :func:`stack`, the policies in one documented order.
- :mod:`~faultkit.contain.timelimit`: :class:`TimeLimiter`, cut off calls that take too long.
"""
from faultkit.contain.breaker import CircuitBreaker
from faultkit.contain.bulkhead import Bulkhead
from faultkit.contain.domains import BlastRadius, FailureDomains
from faultkit.contain.outlier import Ejection, OutlierDetector
from faultkit.contain.policy import Decision, IsolationPolicy
from faultkit.contain.hedge import Hedge
from faultkit.contain.rate import RateLimiter
from faultkit.contain.retry import Retry, RetryBudget
from faultkit.contain.stack import Stack, stack
from faultkit.contain.timelimit import TimeLimiter

__all__ = ["FailureDomains", "BlastRadius", "IsolationPolicy", "Decision",
           "CircuitBreaker", "Bulkhead", "OutlierDetector", "Ejection",
           "TimeLimiter", "RateLimiter", "Retry", "RetryBudget",
           "Hedge", "Stack", "stack"]
