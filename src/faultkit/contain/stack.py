"""Composition: one order for stacking the contain policies, and a helper that builds it.

The order is resilience4j's (outermost first)::

    Retry( CircuitBreaker( RateLimiter( TimeLimiter( Bulkhead( call )))))

- Retry outermost: each attempt goes through every other policy, so a retry
  is refused by an open breaker or a spent rate limit like any call, and a
  time-limited attempt that fails is retried.
- The breaker outside the rate limiter and the time limiter: it counts time-outs
  (``TimeoutError`` or the time limiter's cancellation) as failures, and a call
  it refuses takes no rate-limit permit.
- The rate limiter outside the time limiter: waiting for a permit does not eat
  into the call's time limit.
- The bulkhead innermost: a slot is held only while the call runs.
"""
import functools
import inspect
from typing import Any, Callable, Coroutine, Dict, Optional, TypeVar, overload

from faultkit.contain._breaker import CircuitBreaker
from faultkit.contain._rate import RateLimiter
from faultkit.contain._retry import Retry
from faultkit.contain.bulkhead import Bulkhead
from faultkit.contain.timelimit import TimeLimiter

_T = TypeVar("_T")

__all__ = ["Stack", "stack"]

_ORDER = (("retry", Retry), ("breaker", CircuitBreaker), ("rate_limiter", RateLimiter),
          ("time_limiter", TimeLimiter), ("bulkhead", Bulkhead))


class Stack:
    """Policies applied in the documented order (see the module docstring).

    Build with :func:`stack`.  ``call(fn, *args, **kwargs)`` runs a plain
    function (the time limiter, if any, runs it in its executor) or awaits an
    ``async def`` one; ``@stack`` decorates either; ``metrics()`` returns each
    policy's metrics by name, so nothing is lost by stacking.
    """

    def __init__(self, **policies):
        self.policies = {}
        for name, cls in _ORDER:
            policy = policies.pop(name, None)
            if policy is None:
                continue
            if not isinstance(policy, cls):
                raise TypeError(f"{name} must be a {cls.__name__}, not {type(policy).__name__}")
            self.policies[name] = policy
            setattr(self, name, policy)
        for name, _ in _ORDER:
            if name not in self.policies:
                setattr(self, name, None)
        if policies:
            raise TypeError(f"unknown policies: {', '.join(sorted(policies))}")

    def _sync(self, fn):
        f = fn
        if self.bulkhead is not None:
            f = functools.partial(self.bulkhead.call, f)
        if self.time_limiter is not None:
            f = functools.partial(self.time_limiter.call_sync, f)
        if self.rate_limiter is not None:
            limiter, inner = self.rate_limiter, f

            def f(*args, **kwargs):
                limiter.acquire()
                return inner(*args, **kwargs)
        if self.breaker is not None:
            f = functools.partial(self.breaker.call, f)
        if self.retry is not None:
            f = functools.partial(self.retry.call, f)
        return f

    def _async(self, fn):
        f = fn
        if self.bulkhead is not None:
            f = functools.partial(self.bulkhead.call_async, f)
        if self.time_limiter is not None:
            f = functools.partial(self.time_limiter.call, f)
        if self.rate_limiter is not None:
            limiter, inner = self.rate_limiter, f

            async def f(*args, **kwargs):
                await limiter.acquire_async()
                return await inner(*args, **kwargs)
        if self.breaker is not None:
            f = functools.partial(self.breaker.call, f)
        if self.retry is not None:
            f = functools.partial(self.retry.call, f)
        return f

    @overload
    def call(self, fn: Callable[..., Coroutine[Any, Any, _T]], /, *args: Any,
             **kwargs: Any) -> Coroutine[Any, Any, _T]: ...
    @overload
    def call(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T: ...

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` through every policy (an awaitable for ``async def``)."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            return self._async(fn)(*args, **kwargs)
        return self._sync(fn)(*args, **kwargs)

    def __call__(self, fn):
        """Decorate ``fn`` (plain or ``async def``)."""
        if not callable(fn):
            raise TypeError(f"Stack decorates callables, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            chain = self._async(fn)

            @functools.wraps(fn)
            async def stacked_async(*args, **kwargs):
                return await chain(*args, **kwargs)
            return stacked_async
        return functools.wraps(fn)(self._sync(fn))

    def metrics(self) -> Dict[str, Any]:
        """``{name: metrics}`` for each policy (a bulkhead reports in_flight/available/waiting)."""
        out = {}
        for name, policy in self.policies.items():
            if name == "bulkhead":
                out[name] = {"in_flight": policy.in_flight, "available": policy.available,
                             "waiting": policy.waiting}
            elif name == "time_limiter":
                out[name] = {"timeouts": policy.timeouts}
            else:
                out[name] = policy.metrics()
        return out

    def __repr__(self):
        return "Stack(" + ", ".join(f"{n}={p!r}" for n, p in self.policies.items()) + ")"


def stack(*, retry: Optional[Retry] = None, breaker: Optional[CircuitBreaker] = None,
          rate_limiter: Optional[RateLimiter] = None, time_limiter: Optional[TimeLimiter] = None,
          bulkhead: Optional[Bulkhead] = None) -> "Stack":
    """Stack the given policies (each optional) in the documented order:
    ``Retry(CircuitBreaker(RateLimiter(TimeLimiter(Bulkhead(call)))))``."""
    return Stack(retry=retry, breaker=breaker, rate_limiter=rate_limiter,
                 time_limiter=time_limiter, bulkhead=bulkhead)
