"""OpenTelemetry export through the OTel metrics API: observable instruments whose callbacks
read a :class:`~faultkit.observe.Registry`, so any SDK reader or exporter works
(``pip install 'faultkit[otel]'``)."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from faultkit.observe.metrics import Metric, Registry, families

__all__ = ["instrument"]

_UNITS = (("_seconds", "s"), ("_bytes", "By"))


def _otel_name(prom: str) -> str:
    """faultkit_breaker_calls_total -> faultkit.breaker.calls (OTel drops _total and the unit)."""
    base = prom[: -len("_total")] if prom.endswith("_total") else prom
    for suffix, _ in _UNITS:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    head, _, rest = base.partition("_")
    return head + "." + rest.replace("_", ".", 1)


def _unit(prom: str) -> str:
    base = prom[: -len("_total")] if prom.endswith("_total") else prom
    for suffix, unit in _UNITS:
        if base.endswith(suffix):
            return unit
    return "1"


def instrument(registry: Registry, meter: Any, *, max_age: float = 1.0) -> List[Any]:
    """Create one observable instrument per faultkit metric on ``meter`` (an OTel ``Meter``).

    Counters become ``ObservableCounter``, gauges ``ObservableGauge``; labels become
    attributes; names follow OTel's dotted style (``faultkit.breaker.calls``, unit
    ``1``; ``..._seconds`` -> unit ``s``).  One collection of ``registry`` serves every
    instrument's callback within ``max_age`` seconds (default 1.0), so a reader's pass
    reads each object once.  Returns the instruments."""
    if not isinstance(registry, Registry):
        raise TypeError(f"registry must be a faultkit.observe.Registry, got {type(registry).__name__}")
    if not (isinstance(max_age, (int, float)) and not isinstance(max_age, bool) and max_age >= 0):
        raise ValueError(f"max_age must be a number >= 0, got {max_age!r}")
    from opentelemetry.metrics import CallbackOptions, Observation

    lock = threading.Lock()
    cache: Dict[str, Any] = {"at": None, "by_name": {}}

    def current() -> Dict[str, Metric]:
        with lock:
            now = time.monotonic()
            if cache["at"] is None or now - cache["at"] > max_age:
                cache["by_name"] = {m.name: m for m in registry.collect()}
                cache["at"] = now
            return cache["by_name"]

    made = []
    for name, kind, help, _labels in families():
        def callback(options: CallbackOptions, name: str = name) -> List[Any]:
            m = current().get(name)
            if m is None:
                return []
            return [Observation(v, dict(zip(m.labels, values))) for values, v in m.samples]

        create = meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        made.append(create(_otel_name(name), callbacks=[callback], unit=_unit(name), description=help))
    return made
