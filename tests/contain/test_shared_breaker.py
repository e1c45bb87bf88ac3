"""Breaker state shared through a real redis-server (started by the fixture)."""
import subprocess
import sys
import textwrap
import threading

import pytest

redis = pytest.importorskip("redis")

import faultkit as fk  # noqa: E402
from faultkit.contain.shared import RedisBreakerSync  # noqa: E402

from redis_server import RedisServer  # noqa: E402

WAIT = 20.0  # an upper bound on message delivery; tests wait for events, never for time


@pytest.fixture(scope="module")
def server():
    s = RedisServer()
    yield s
    s.stop()


def boom():
    raise ConnectionError("down")


def trip(b):
    """One failing call (the breakers here open on one)."""
    with pytest.raises(ConnectionError):
        b.call(boom)


def watcher(b, state):
    ev = threading.Event()
    b.add_listener(lambda br, old, new: ev.set() if new == state else None)
    return ev


def test_processes_trip_and_recover_together(server):
    a_client = redis.Redis(port=server.port)
    b_client = redis.Redis(port=server.port)
    # a's clock is ours: its open state (and the key's TTL, its time to half-open) lasts
    # until we move the clock, however slowly this machine runs the checks in between.
    now = [0.0]
    a = fk.CircuitBreaker(minimum_calls=1, window_size=1, reset_timeout=60.0, half_open_calls=1,
                          clock=lambda: now[0])
    b = fk.CircuitBreaker(minimum_calls=1, window_size=1, reset_timeout=600.0)
    with RedisBreakerSync(a, a_client, "svc") as sa, RedisBreakerSync(b, b_client, "svc") as sb:
        opened = watcher(b, "open")
        with pytest.raises(ConnectionError):
            a.call(boom)
        assert opened.wait(WAIT) and b.metrics()["state"] == "open"
        assert sb.applied == 1 and sa.published == 1 and sb.published == 0
        assert b_client.get("faultkit:breaker:svc") == b"open"
        assert 0 < b_client.pttl("faultkit:breaker:svc") <= 60_000   # expires when a half-opens
        closed = watcher(b, "closed")
        now[0] = 60.0
        assert a.call(lambda: "ok") == "ok"        # a's half-open trial passes: closes
        assert a.state == "closed"
        assert closed.wait(WAIT) and b.metrics()["state"] == "closed"
        assert b_client.get("faultkit:breaker:svc") is None


def test_a_late_process_joins_open_and_names_are_separate(server):
    client = redis.Redis(port=server.port)
    a = fk.CircuitBreaker(minimum_calls=1, window_size=1, reset_timeout=600.0)
    with RedisBreakerSync(a, client, "late"):
        trip(a)
        late = fk.CircuitBreaker()
        with RedisBreakerSync(late, redis.Redis(port=server.port), "late"):
            assert late.metrics()["state"] == "open"
        other = fk.CircuitBreaker()
        with RedisBreakerSync(other, redis.Redis(port=server.port), "other"):
            assert other.metrics()["state"] == "closed"


def test_another_os_process_trips_us(server):
    b = fk.CircuitBreaker(reset_timeout=600.0)
    with RedisBreakerSync(b, redis.Redis(port=server.port), "proc"):
        opened = watcher(b, "open")
        code = textwrap.dedent(f"""
            import redis, faultkit as fk
            from faultkit.contain.shared import RedisBreakerSync
            b = fk.CircuitBreaker(minimum_calls=1, window_size=1)
            with RedisBreakerSync(b, redis.Redis(port={server.port}), "proc"):
                try:
                    b.call(lambda: 1 / 0)
                except ZeroDivisionError:
                    pass
                assert b.state == "open"
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert opened.wait(WAIT) and b.metrics()["state"] == "open"


@pytest.mark.slow
def test_a_redis_outage_only_stops_the_sharing(caplog):
    s = RedisServer()
    client = redis.Redis(port=s.port, socket_timeout=2, socket_connect_timeout=2)
    b = fk.CircuitBreaker(minimum_calls=1, window_size=1)
    sync = RedisBreakerSync(b, client, "outage")
    s.stop()
    trip(b)                                     # publishing fails: logged, breaker still opens
    assert b.state == "open"
    assert "could not publish open" in caplog.text
    sync.close()


def test_bad_arguments(server):
    client = redis.Redis(port=server.port)
    with pytest.raises(TypeError, match="breaker must be a CircuitBreaker"):
        RedisBreakerSync(3, client, "x")
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        RedisBreakerSync(fk.CircuitBreaker(), client, "")
    with pytest.raises(TypeError, match="client must be a redis.Redis"):
        RedisBreakerSync(fk.CircuitBreaker(), object(), "x")
