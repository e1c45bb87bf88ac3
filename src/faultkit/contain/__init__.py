"""Contain: keep a fault inside its failure domain.

- :mod:`~faultkit.contain.breaker`: :class:`CircuitBreaker`, fail fast on a failing dependency.
- :mod:`~faultkit.contain.bulkhead`: :class:`Bulkhead`, cap the calls in flight into one dependency.
"""
from faultkit.contain.breaker import CircuitBreaker
from faultkit.contain.bulkhead import Bulkhead

__all__ = ["CircuitBreaker", "Bulkhead"]
