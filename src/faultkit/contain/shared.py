"""Breaker state shared across processes through Redis (``pip install faultkit[redis]``).

:class:`RedisBreakerSync` connects a local :class:`~faultkit.CircuitBreaker`
to a Redis server so that every process of a service that uses the same
``name`` trips and recovers together:

- when the local breaker **opens** (its own window tripped it), it publishes
  ``open`` on the channel ``<prefix><name>`` and sets the key
  ``<prefix><name>`` to ``open`` for ``reset_timeout`` seconds;
- when it **closes** (its half-open trials passed), it publishes ``closed``
  and deletes the key;
- a background thread (redis-py's pub/sub thread) applies the other
  processes' messages: ``open`` opens the local breaker (its own
  ``reset_timeout`` starts then), ``closed`` resets it;
- a process that starts while the key says ``open`` opens at once.

The closed fast path never touches the network: only transitions do, from the
listener, outside the protected call.  Half-open is not shared: each process
probes on its own, and the first whose trials pass closes them all.  A Redis
outage only stops the sharing (logged at WARNING on logger
``faultkit.contain``): every breaker keeps working alone.  Messages carry a
random per-sync token, so a process ignores its own.
"""
import logging
import os
import threading

from faultkit.contain._breaker import CircuitBreaker

__all__ = ["RedisBreakerSync"]

_log = logging.getLogger("faultkit.contain")


class RedisBreakerSync:
    """Share ``breaker``'s open/closed transitions under ``name`` through ``client``.

    ``client`` is a ``redis.Redis`` (redis-py) connected to the shared server;
    ``prefix`` (default ``"faultkit:breaker:"``) namespaces the channel and
    the key.  ``start()`` (called by the constructor unless ``start=False``)
    joins the current shared state and starts listening; ``close()`` stops.
    Usable as a context manager.
    """

    def __init__(self, breaker, client, name, *, prefix="faultkit:breaker:", start=True):
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker, not {type(breaker).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        for method in ("publish", "set", "get", "delete", "pubsub"):
            if not callable(getattr(client, method, None)):
                raise TypeError(f"client must be a redis.Redis, not {type(client).__name__}")
        self.breaker = breaker
        self.client = client
        self.name = name
        self.key = self.channel = prefix + name
        self.token = os.urandom(8).hex()
        self.published = 0
        self.applied = 0
        self._local = threading.local()
        self._stopping = threading.Event()
        self._pubsub = None
        self._thread = None
        if start:
            self.start()

    def start(self):
        """Listen to the other processes and join the shared state (open if the key says so)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{self.channel: self._on_message})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True,
                                                  exception_handler=self._on_error)
        self.breaker.add_listener(self._on_transition)
        try:
            state = self.client.get(self.key)
        except Exception:
            _log.warning("breaker %s: could not read the shared state", self.name, exc_info=True)
            state = None
        if state in (b"open", "open") and self.breaker.state != "open":
            self._apply(self.breaker.open)

    def close(self):
        """Stop sharing (the breaker keeps its state and works alone)."""
        if self._thread is None:
            return
        try:
            self.breaker.remove_listener(self._on_transition)
        except ValueError:
            pass
        self._stopping.set()
        self._thread.stop()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._thread = self._pubsub = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- local transitions -> Redis --------------------------------------------
    def _on_transition(self, breaker, old, new):
        if getattr(self._local, "applying", False) or new == "half_open":
            return
        try:
            if new == "open":
                ttl = max(1, int(breaker.time_until_half_open * 1000) or 1)
                self.client.set(self.key, "open", px=ttl)
            else:
                self.client.delete(self.key)
            self.client.publish(self.channel, f"{self.token} {new}")
            self.published += 1
        except Exception:
            _log.warning("breaker %s: could not publish %s", self.name, new, exc_info=True)

    # -- Redis -> local --------------------------------------------------------
    def _apply(self, action):
        self._local.applying = True
        try:
            action()
        finally:
            self._local.applying = False
        self.applied += 1

    def _on_error(self, exc, pubsub, thread):
        # Redis unreachable: log, wait a little (no hot loop), let redis-py reconnect.
        _log.warning("breaker %s: shared state unavailable: %s", self.name, exc)
        self._stopping.wait(1.0)

    def _on_message(self, message):
        data = message.get("data")
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if not isinstance(data, str):
            return
        parts = data.split(" ")
        if len(parts) != 2 or parts[0] == self.token:
            return
        if parts[1] == "open":
            if self.breaker.state != "open":
                self._apply(self.breaker.open)
        elif parts[1] == "closed":
            if self.breaker.state != "closed":
                self._apply(self.breaker.reset)
        else:
            _log.warning("breaker %s: ignored a malformed message %r", self.name, data[:100])

    def __repr__(self):
        return f"RedisBreakerSync(name={self.name!r}, running={self._thread is not None})"
