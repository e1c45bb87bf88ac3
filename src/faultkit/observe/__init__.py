"""Observe: one metrics model for every pillar, exported to Prometheus and OpenTelemetry,
and events as structured records (docs/observe.md).

The model reads objects when scraped, so a registered breaker or ring pays nothing per
call.  The exporters import ``prometheus_client`` / ``opentelemetry`` only when used.
"""
from faultkit.observe.events import JsonLinesFormatter, decision_record, log_events, record
from faultkit.observe.metrics import Metric, Registry

__all__ = ["Registry", "Metric", "log_events", "record", "decision_record", "JsonLinesFormatter"]
