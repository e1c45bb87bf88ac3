"""Contain: keep a fault inside its failure domain.

- :mod:`~faultkit.contain.breaker`: :class:`CircuitBreaker`, fail fast on a failing dependency.
"""
from faultkit.contain.breaker import CircuitBreaker

__all__ = ["CircuitBreaker"]
