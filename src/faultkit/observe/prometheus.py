"""Prometheus export: a ``prometheus_client`` collector over a :class:`~faultkit.observe.Registry`,
and an HTTP ``/metrics`` endpoint (``pip install 'faultkit[prometheus]'``)."""
from __future__ import annotations

from typing import Any, Iterator, Tuple

from faultkit.observe.metrics import Registry

__all__ = ["PrometheusCollector", "serve"]


class PrometheusCollector:
    """A ``prometheus_client`` custom collector: every scrape reads ``registry`` afresh.

    ``prometheus_client.REGISTRY.register(PrometheusCollector(reg))`` adds faultkit's
    metrics to an application's existing endpoint."""

    def __init__(self, registry: Registry) -> None:
        if not isinstance(registry, Registry):
            raise TypeError(f"registry must be a faultkit.observe.Registry, got {type(registry).__name__}")
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for m in self.registry.collect():
            if m.kind == "counter":
                # prometheus_client appends _total itself
                fam = CounterMetricFamily(m.name[: -len("_total")], m.help, labels=list(m.labels))
            else:
                fam = GaugeMetricFamily(m.name, m.help, labels=list(m.labels))
            for values, v in m.samples:
                fam.add_metric(list(values), v)
            yield fam

    def describe(self) -> list:
        return []  # families depend on what is registered at scrape time


def serve(registry: Registry, port: int = 0, addr: str = "127.0.0.1") -> Tuple[Any, int]:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port.  Returns ``(server, port)``; ``server.shutdown()``
    stops it.  The default address is loopback: bind wider on purpose."""
    from prometheus_client import CollectorRegistry, start_http_server

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    if not isinstance(addr, str) or not addr:
        raise ValueError(f"addr must be a host address, got {addr!r}")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PrometheusCollector(registry))
    server, _thread = start_http_server(port, addr, registry=reg)
    return server, server.server_port
