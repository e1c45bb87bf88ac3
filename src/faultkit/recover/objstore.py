"""``ObjectStore``: checkpoints in S3 (and S3-compatible servers, GCS, Azure) through obstore.

A :class:`~faultkit.recover.store.Store` without a filesystem.  Everything
lives under one URL prefix (``s3://bucket/prefix``):

``<name>`` (e.g. ``ckpt-000000000007.fkc``)
    The *commit object*, created with a conditional put (``If-None-Match: *``,
    obstore ``mode="create"``), so two writers never overwrite each other and
    an object is visible only once complete.  Either the checkpoint bytes
    themselves (*inline*: objects up to ``part_size``) or a small *pointer
    record* naming the data object (larger ones).
``.data/<name>.<token>``
    The bytes of a large object, uploaded with a multipart upload while the
    codec encodes it (parts of ``part_size`` bytes, ``max_concurrency`` in
    flight), invisible until the upload completes and unreferenced until its
    commit object exists.  ``<token>`` is random per upload.
``.lease``
    The writer lease (JSON), taken with create-if-absent and renewed with
    compare-and-swap on its ETag (``If-Match``).  See :meth:`ObjectStore.lock`.

The layout is described in docs/objstore.md and docs/FORMAT.md; the design
(fencing window, lease duration, retries) in docs/objstore.md.  Needs the
``faultkit[s3]`` extra (``obstore``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import mmap as _mmap
import os
import random
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import weakref
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple, Union

from faultkit.errors import CheckpointLockedError, CorruptCheckpointError, StoreError
from faultkit.recover import _codec
from faultkit.recover.store import Store, StoreLock, _NAME, _check_name

__all__ = ["ObjectStore", "LEASE_DURATION"]

#: Default lease duration in seconds: a crashed writer's lease expires this
#: long after its last renewal, and a live writer renews it every third of it
#: (a background thread) and before every commit that comes more than half
#: of it after the last renewal.
LEASE_DURATION = 30.0
#: Whether download buffers of 32 MiB and more ask for transparent huge pages.  No: measured
#: on the reference VM (Firecracker, free page reporting of 2 MB blocks to the host), a fresh
#: huge page's first touch costs the host's faults for all its 4 kB pages, and a freed one is
#: reported at once, so 256 MiB recovers were bimodal (335-420 ms or 750-1430 ms); 4 kB pages
#: faulted in by the populate thread gave 309-390 ms (docs/benchmarks.md, issue #16).
_HUGE_PAGES = False
#: Default multipart part size (bytes) and the largest object stored inline.
PART_SIZE = 8 << 20
_LEASE = ".lease"
_DATA = ".data/"
_PTR_MAGIC = b"\x89FKPTR1\n"
_CKPT_MAGIC = b"\x89FKCKPT\n"
_DATA_KEY = re.compile(r"^\.data/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,200})\.(?P<token>[0-9a-f]{16,64})$")
_MAX_POINTER = 64 << 10  # a pointer record is ~200 bytes; anything bigger is not one
_MAX_SIZE = 1 << 50
_MAX_AHEAD = 86400.0  # seconds: a lease expiring later than this (plus lease_duration) is treated as garbage
_F_SETPIPE_SZ = 1031  # Linux fcntl: grow a pipe's buffer (faster streaming than 64 KiB)
# URL schemes obstore.store.from_url understands (only s3 is tested).
_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl", "memory", "http", "https")


def _obstore():
    try:
        import obstore
        import obstore.exceptions
        import obstore.store
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("object-store checkpoints need obstore: pip install 'faultkit[s3]'") from e
    return obstore


def _retryable(e: BaseException) -> bool:
    """Transport faults and server errors (5xx) are worth retrying; client errors (4xx) are not."""
    ob = _obstore()
    ex = ob.exceptions
    if isinstance(e, (ex.NotFoundError, ex.AlreadyExistsError, ex.PreconditionError, ex.NotModifiedError,
                      ex.PermissionDeniedError, ex.UnauthenticatedError, ex.InvalidPathError,
                      ex.NotSupportedError, ex.UnknownConfigurationKeyError)):
        return False
    if isinstance(e, (ex.GenericError, ex.BaseError, ConnectionError, TimeoutError)):
        text = str(e)
        return not re.search(r"status code: 4\d\d", text) or "status code: 408" in text or "status code: 429" in text
    return False


class _Lease(StoreLock):
    """The lease this process holds on a store (``ObjectStore.lock()``)."""

    def __init__(self, store: "ObjectStore", e_tag: str, body: dict):
        self._store = store
        self.e_tag = e_tag
        self.body = body
        self.renewed_at = body["taken"]  # store clock time of the last successful renewal
        self.lost: Optional[str] = None  # why we know another writer took it
        self.released = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if store.renew:
            self._thread = threading.Thread(target=self._renew_loop, name="faultkit-lease", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        period = self._store.lease_duration / 3
        while not self._stop.wait(period):
            try:
                self.renew()
            except Exception:  # lost or unreachable: put_atomic's fence reports it
                if self.lost:
                    return

    def renew(self) -> None:
        """Extend the lease (compare-and-swap on its ETag); ``CheckpointLockedError`` if it was taken."""
        with self._mutex:
            if self.lost:
                raise CheckpointLockedError(self.lost)
            if self.released:
                raise CheckpointLockedError(f"the lease on {self._store.url} was released")
            st = self._store
            now = st.clock()
            body = dict(self.body, expires=now + st.lease_duration, nonce=secrets.token_hex(8), taken=now)
            e_tag = st._swap_lease(self.e_tag, body)
            if e_tag is None:
                self.lost = (f"this writer's lease on {st.url} was taken by another writer after it expired "
                             f"(lease_duration={st.lease_duration}s); this writer is fenced and may not commit")
                raise CheckpointLockedError(self.lost)
            self.e_tag, self.body, self.renewed_at = e_tag, body, now

    def fence(self) -> None:
        """Raise ``CheckpointLockedError`` unless the lease is certainly ours now (renewing it if old)."""
        if self.lost:
            raise CheckpointLockedError(self.lost)
        if self.released:
            raise CheckpointLockedError(f"the lease on {self._store.url} was released")
        if self._store.clock() - self.renewed_at >= self._store.lease_duration / 2:
            self.renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if self.released:
                return
            self.released = True
            st = self._store
            if st._lease is self:
                st._lease = None
            if self.lost:
                return
            body = dict(self.body, expires=0.0, released=True, nonce=secrets.token_hex(8))
            try:  # mark it free; if it was taken meanwhile, it is not ours to touch
                st._swap_lease(self.e_tag, body)
            except StoreError:
                pass  # unreachable: the lease simply expires


class ObjectStore(Store):
    """Checkpoint objects under an object-store URL, through obstore (``faultkit[s3]``).

    ``url``: ``s3://bucket/prefix`` (also ``gs://``, ``az://`` and the other
    schemes of ``obstore.store.from_url``; only S3 and S3-compatible servers
    are tested).  Configuration comes from the environment as for every S3
    client (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
    ``AWS_ENDPOINT_URL``, instance/container credentials), overridden by
    ``endpoint`` (e.g. ``http://127.0.0.1:9000``; ``http://`` allows plain
    HTTP), ``region``, and ``config`` (any obstore store config key, e.g.
    ``{"access_key_id": ..., "secret_access_key": ...}``) and
    ``client_options`` (obstore ``ClientConfig``: timeouts, proxies).

    Writes: ``put_atomic`` streams what its ``write`` callback writes through
    a pipe into a multipart upload of ``part_size``-byte parts (default
    8 MiB, ``max_concurrency`` = 4 in flight), so memory stays at about
    ``(max_concurrency + 2) * part_size`` whatever the object's size; an
    object of at most ``part_size`` bytes is stored inline in one request.
    The commit is a conditional create: an existing name is never replaced
    (``CheckpointLockedError``: another writer committed it).

    The writer lock is a lease (``lease_duration`` seconds, default 30; see
    :meth:`lock`).  ``clock`` (default ``time.time``; seconds) is the clock
    lease expiry is judged by: hosts sharing a store need clocks agreeing to
    well within ``lease_duration``.  ``renew`` (default True) renews the lease
    from a background thread every ``lease_duration / 3``.

    Faults: every HTTP request is retried by obstore up to ``retries`` times
    (default 3) on 5xx, connection errors and dropped connections, with
    exponential backoff and jitter from ``backoff`` seconds (default 0.1) up
    to ``max_backoff`` (default 5); an operation that still fails with a
    transport error is retried as a whole up to ``retries`` times with the
    same policy (an upload restarts, re-encoding the state).  What remains is
    a :class:`~faultkit.errors.StoreError` naming the object and the cause;
    a half-done upload is never visible.

    ``get(name, mmap=True)`` downloads the object into ``cache_dir`` (default:
    a private temporary directory removed at exit) and maps the file; a
    cached copy with the same ETag is reused.
    """

    def __init__(self, url: str, *, endpoint: Optional[str] = None, region: Optional[str] = None,
                 config: Optional[Dict[str, Any]] = None, client_options: Optional[Dict[str, Any]] = None,
                 lease_duration: float = LEASE_DURATION, renew: bool = True,
                 clock: Callable[[], float] = time.time, retries: int = 3, backoff: float = 0.1,
                 max_backoff: float = 5.0, part_size: int = PART_SIZE, max_concurrency: int = 4,
                 cache_dir: Optional[str] = None, sleep: Callable[[float], None] = time.sleep):
        ob = _obstore()
        if not isinstance(url, str) or "://" not in url:
            raise TypeError(f"url must be a str like 's3://bucket/prefix', got {url!r}")
        scheme = url.split("://", 1)[0].lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"unsupported object-store URL scheme {scheme!r} in {url!r} (use one of {_SCHEMES})")
        v: Any
        for n, v in (("endpoint", endpoint), ("region", region), ("cache_dir", cache_dir)):
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{n} must be a str or None, got {v!r}")
        for n, v in (("config", config), ("client_options", client_options)):
            if v is not None and not isinstance(v, dict):
                raise TypeError(f"{n} must be a dict or None, got {v!r}")
        for n, v in (("lease_duration", lease_duration), ("backoff", backoff), ("max_backoff", max_backoff)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and v < 1e9):
                raise ValueError(f"{n} must be a positive number of seconds, got {v!r}")
        for n, v, lo in (("retries", retries, 0), ("part_size", part_size, 5 << 20),
                         ("max_concurrency", max_concurrency, 1)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{n} must be an int, got {v!r}")
            if v < lo or v > (1 << 32):
                raise ValueError(f"{n} must be in [{lo}, 2**32], got {v}")
        if not callable(clock) or not callable(sleep):
            raise TypeError("clock and sleep must be callable")
        self.url = url
        self.lease_duration = float(lease_duration)
        self.renew = bool(renew)
        self.clock = clock
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self._sleep = sleep
        self._token = secrets.token_hex(8)  # this store object's identity in leases
        self._lease: Optional[_Lease] = None
        self._inline: set = set()  # names this object committed inline (no data objects to delete)
        self._cache_dir = cache_dir
        self._cache_lock = threading.Lock()
        cfg = dict(config or {})
        copts = dict(client_options or {})
        if endpoint is not None:
            cfg["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                copts.setdefault("allow_http", True)
        if region is not None:
            cfg["region"] = region
        from datetime import timedelta
        timeout = timedelta(seconds=max(30.0, 4 * max_backoff * (retries + 1)))
        retry_config = {"max_retries": retries, "retry_timeout": timeout,
                        "backoff": {"init_backoff": timedelta(seconds=self.backoff),
                                    "max_backoff": timedelta(seconds=self.max_backoff), "base": 2}}
        try:
            self._store = ob.store.from_url(url, config=cfg or None, client_options=copts or None,
                                            retry_config=retry_config)
        except Exception as e:
            raise ValueError(f"cannot open object store {url!r}: {e}") from e
        self._ob = ob

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    # ------------------------------------------------------------ retries

    def _call(self, what: str, fn: Callable[[], Any], *, retry: bool = True) -> Any:
        """``fn()``, retried on transport faults.

        Other obstore errors pass through; transport faults left after the retries become StoreError.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                if not _retryable(e):
                    raise
                if not retry or attempt >= self.retries:
                    raise StoreError(f"{what} on {self.url} failed after {attempt + 1} attempt(s): "
                                     f"{_short(e)}") from e
            # full jitter: uniform in [0, backoff * 2**attempt], capped
            self._sleep(random.uniform(0, min(self.max_backoff, self.backoff * (2 ** attempt))))
            attempt += 1

    def _fail(self, what: str, e: BaseException) -> StoreError:
        return StoreError(f"{what} on {self.url} failed: {_short(e)}")

    # ------------------------------------------------------------ the lease

    def _read_lease(self) -> Tuple[Optional[dict], Optional[str]]:
        ob = self._ob
        try:
            res = self._call("reading the lease", lambda: ob.get(self._store, _LEASE))
            data = bytes(self._call("reading the lease", res.bytes))
        except FileNotFoundError:
            return None, None
        except StoreError:
            raise
        except Exception as e:
            raise self._fail("reading the lease", e) from e
        try:
            body = json.loads(data[:4096].decode("utf-8"))
            if not isinstance(body, dict):
                body = {}
        except (UnicodeDecodeError, ValueError):
            body = {}  # garbage: treated as an expired lease
        return body, res.meta.get("e_tag")

    def _swap_lease(self, e_tag: str, body: dict) -> Optional[str]:
        """Replace the lease if its ETag is still ``e_tag``; the new ETag, or None if another writer changed it."""
        ob = self._ob
        data = json.dumps(body, sort_keys=True).encode()
        try:
            return self._call("renewing the lease", lambda: ob.put(self._store, _LEASE, data,
                                                                   mode={"e_tag": e_tag}))["e_tag"]
        except (ob.exceptions.PreconditionError, FileNotFoundError, ob.exceptions.AlreadyExistsError):
            # Did an earlier attempt of ours succeed with its reply lost?
            cur, cur_tag = self._read_lease()
            if cur is not None and cur.get("owner") == body["owner"] and cur.get("nonce") == body["nonce"]:
                return cur_tag
            return None
        except StoreError:
            raise
        except Exception as e:
            raise self._fail("renewing the lease", e) from e

    def lock(self) -> StoreLock:
        """Take the writer lease or raise ``CheckpointLockedError``.

        The lease is the object ``.lease``: JSON naming the holder (random
        token, host, pid) and when it expires (``clock()`` +
        ``lease_duration``).  Taken with a conditional create; if it exists and
        has expired (or was released), taken over with a compare-and-swap on
        its ETag, so of racing writers exactly one wins.  The holder renews it
        (CAS) every ``lease_duration / 3`` and before a commit more than
        ``lease_duration / 2`` after the last renewal; a renewal that finds the
        ETag changed means another writer took it: every later ``put_atomic``
        raises ``CheckpointLockedError`` (fencing).  A crashed holder's lease
        expires ``lease_duration`` after its last renewal.
        """
        ob = self._ob
        if self._lease is not None and not self._lease.released:
            raise CheckpointLockedError(f"{self.url} is already locked by this ObjectStore")
        for _ in range(8):
            now = self.clock()
            body = {"owner": self._token, "host": socket.gethostname(), "pid": os.getpid(),
                    "expires": now + self.lease_duration, "taken": now, "nonce": secrets.token_hex(8)}
            data = json.dumps(body, sort_keys=True).encode()
            try:
                e_tag = self._call("taking the lease",
                                   functools.partial(ob.put, self._store, _LEASE, data, mode="create"))["e_tag"]
            except ob.exceptions.AlreadyExistsError:
                cur, cur_tag = self._read_lease()
                if cur is None:
                    continue  # released and deleted meanwhile: try creating again
                if cur.get("owner") == self._token and cur.get("nonce") == body["nonce"]:
                    e_tag = cur_tag  # our create succeeded; its reply was lost
                else:
                    expires = cur.get("expires")
                    # A lease is live until its expiry; one claiming more than a day
                    # ahead (or not a finite number) is garbage, not a lock forever.
                    live = (isinstance(expires, (int, float)) and not isinstance(expires, bool)
                            and not cur.get("released") and now < expires <= now + _MAX_AHEAD + self.lease_duration)
                    if live:
                        raise CheckpointLockedError(
                            f"{self.url} is locked by another writer (host {cur.get('host')!r}, pid {cur.get('pid')}) "
                            f"whose lease expires in {(expires or 0.0) - now:.1f} s; one Checkpointer may write to a "
                            "store at a time") from None
                    e_tag = self._swap_lease(cur_tag or "", body)
                    if e_tag is None:
                        raise CheckpointLockedError(
                            f"{self.url}: another writer took the expired lease first") from None
            except StoreError:
                raise
            except Exception as e:
                raise self._fail("taking the lease", e) from e
            self._lease = _Lease(self, e_tag, body)
            return self._lease
        raise CheckpointLockedError(f"{self.url}: the lease kept changing; try again")

    def _fence(self) -> None:
        lease = self._lease
        if lease is not None:
            lease.fence()

    # ------------------------------------------------------------ writing

    def put_atomic(self, name: str, write: Callable[[BinaryIO], None]) -> int:
        """Create object ``name`` from what ``write(file)`` writes (streamed; never replaces).

        ``file`` is the write end of a pipe (a real ``fileno()``, not
        seekable).  Objects up to ``part_size`` bytes are committed inline with
        one conditional create; larger ones are uploaded to
        ``.data/<name>.<token>`` in parts while ``write`` runs, then committed
        by a conditional create of a pointer record.  If this store holds the
        lease, it is checked (renewed if old) before the upload and before the
        commit: a fenced writer gets ``CheckpointLockedError``.  Returns the
        object's size in bytes.
        """
        _check_name(name)
        if not callable(write):
            raise TypeError(f"write must be callable, got {write!r}")
        self._fence()
        attempt = 0
        while True:
            token = secrets.token_hex(16)
            try:
                size, inline, e_tag = self._upload(name, token, write)
                break
            except _WriterError as e:
                raise e.error from None
            except Exception as e:
                if not _retryable(e) or attempt >= self.retries:
                    if isinstance(e, (StoreError, CheckpointLockedError)):
                        raise
                    raise StoreError(f"uploading {name} to {self.url} failed after {attempt + 1} attempt(s): "
                                     f"{_short(e)}") from e
            self._sleep(random.uniform(0, min(self.max_backoff, self.backoff * (2 ** attempt))))
            attempt += 1
        if inline is not None:
            body = inline
        else:
            body = _PTR_MAGIC + json.dumps({"data": f"{_DATA}{name}.{token}", "size": size, "e_tag": e_tag},
                                           sort_keys=True).encode()
        try:
            self._fence()  # fencing: a writer that lost its lease stops here
            self._create(name, body)
            if inline is not None:
                self._inline.add(name)
        except BaseException:
            if inline is None:
                self._delete_quietly(f"{_DATA}{name}.{token}")
            raise
        return size

    def _create(self, name: str, body: bytes) -> None:
        ob = self._ob
        try:
            self._call(f"committing {name}", lambda: ob.put(self._store, name, body, mode="create"))
        except ob.exceptions.AlreadyExistsError:
            # Ours, committed by an attempt whose reply was lost?  Else another writer's.
            try:
                cur = bytes(self._call(f"reading {name}", lambda: ob.get(self._store, name).bytes()))
            except FileNotFoundError:
                cur = None
            if cur != body:
                raise CheckpointLockedError(f"{self.url}/{name} was committed by another writer; "
                                            "this writer no longer owns the store") from None
        except StoreError:
            raise
        except Exception as e:
            raise self._fail(f"committing {name}", e) from e

    def _upload(self, name: str, token: str, write) -> Tuple[int, Optional[bytes], Optional[str]]:
        """Run ``write`` into a pipe on a helper thread and upload what it writes.

        Returns ``(size, inline bytes or None, e_tag of the data object)``.
        """
        ob = self._ob
        r, w = os.pipe()
        try:
            import fcntl
            fcntl.fcntl(w, _F_SETPIPE_SZ, 1 << 20)
        except (ImportError, OSError):
            pass
        wfile = os.fdopen(w, "wb", buffering=0)
        rfile = os.fdopen(r, "rb", buffering=0)
        outcome: dict = {}

        def produce() -> None:
            try:
                write(wfile)
            except BaseException as e:  # reported by the reader at EOF
                outcome["error"] = e
            finally:
                try:
                    wfile.close()
                except OSError as e:
                    outcome.setdefault("error", e)

        thread = threading.Thread(target=produce, name="faultkit-objstore-encode", daemon=True)
        thread.start()
        total = [0]

        def read_part() -> memoryview:
            buf = bytearray(self.part_size)
            view = memoryview(buf)
            got = 0
            while got < len(buf):
                n = rfile.readinto(view[got:])
                if not n:
                    break
                got += n
            total[0] += got
            return view[:got]

        def finished() -> None:
            thread.join()
            if "error" in outcome:
                raise _WriterError(outcome["error"])

        try:
            first = read_part()
            if len(first) < self.part_size and not bytes(first[:len(_PTR_MAGIC)]) == _PTR_MAGIC:
                finished()
                return total[0], bytes(first), None  # small: committed inline by the caller

            def parts():
                yield first
                while True:
                    part = read_part()
                    if len(part):
                        yield part
                    if len(part) < self.part_size:
                        break
                finished()  # a writer that failed must not complete the upload

            key = f"{_DATA}{name}.{token}"
            res = ob.put(self._store, key, parts(), use_multipart=True, chunk_size=self.part_size,
                         max_concurrency=self.max_concurrency)
            return total[0], None, res.get("e_tag")
        except BaseException as e:
            # Unblock a writer stuck on a full pipe (it gets EPIPE), then report.
            rfile.close()
            thread.join()
            cause = e.__cause__ if isinstance(e.__cause__, _WriterError) else e
            if isinstance(cause, _WriterError):
                raise cause from None
            if "error" in outcome and not isinstance(outcome["error"], (BrokenPipeError, OSError)):
                raise _WriterError(outcome["error"]) from None
            raise
        finally:
            rfile.close()

    # ------------------------------------------------------------ reading

    def _pointer(self, name: str, body) -> Tuple[str, int, Optional[str]]:
        try:
            rec = json.loads(bytes(body[len(_PTR_MAGIC):]).decode("utf-8"))
            key, size, e_tag = rec["data"], rec["size"], rec.get("e_tag")
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CorruptCheckpointError(f"malformed pointer record in {name}: {e}") from None
        m = _DATA_KEY.match(key) if isinstance(key, str) else None
        if not m or m.group("name") != name:
            raise CorruptCheckpointError(f"pointer record of {name} names a foreign data object {key!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_SIZE:
            raise CorruptCheckpointError(f"pointer record of {name} has a bad size {size!r}")
        if e_tag is not None and not isinstance(e_tag, str):
            raise CorruptCheckpointError(f"pointer record of {name} has a bad ETag {e_tag!r}")
        return key, size, e_tag

    def _head(self, name: str):
        """The commit object: ``("inline", bytes)`` or ``("pointer", (key, size, e_tag))``."""
        ob = self._ob
        try:
            res = self._call(f"reading {name}", lambda: ob.get(self._store, name))
            body = self._call(f"reading {name}", res.bytes)
        except FileNotFoundError:
            raise
        except StoreError:
            raise
        except Exception as e:
            raise self._fail(f"reading {name}", e) from e
        if bytes(body[:len(_PTR_MAGIC)]) == _PTR_MAGIC and len(body) <= _MAX_POINTER:
            return "pointer", self._pointer(name, body), res.meta.get("e_tag")
        return "inline", body, res.meta.get("e_tag")

    def _fetch(self, name: str, key: str, size: int, make_sink) -> Optional[str]:
        """Stream data object ``key`` (expected ``size`` bytes) into ``make_sink()(chunk)``; returns its ETag.

        ``make_sink`` is called once the object's size is known to be ``size``
        (so a crafted pointer cannot make us allocate), and again, starting
        over, when a transport fault cuts the download (up to ``retries`` times).
        """
        attempt = 0
        while True:
            try:
                return self._fetch_once(name, key, size, make_sink)
            except StoreError as e:
                if attempt >= self.retries or not _retryable(e.__cause__ or e):
                    raise
            self._sleep(random.uniform(0, min(self.max_backoff, self.backoff * (2 ** attempt))))
            attempt += 1

    def _fetch_once(self, name: str, key: str, size: int, make_sink) -> Optional[str]:
        ob = self._ob
        try:
            res = self._call(f"reading {key}", lambda: ob.get(self._store, key))
            if res.meta["size"] != size:
                raise CorruptCheckpointError(f"data object of {name} holds {res.meta['size']} bytes, "
                                             f"its pointer says {size}")
            sink = make_sink()
            got = 0
            # The HTTP body frames as they arrive: asking obstore for bigger chunks
            # costs a second copy (measured: 256 MiB from moto 1.08x one raw get vs 1.25x).
            for chunk in res.stream(min_chunk_size=0):
                got += len(chunk)
                if got > size:
                    raise CorruptCheckpointError(f"data object of {name} is longer than {size} bytes")
                sink(chunk)
            if got != size:
                raise CorruptCheckpointError(f"data object of {name} ended after {got} of {size} bytes")
            return res.meta.get("e_tag")
        except FileNotFoundError:
            raise CorruptCheckpointError(f"data object {key} of {name} is missing") from None
        except (CorruptCheckpointError, StoreError):
            raise
        except Exception as e:
            if _retryable(e):
                raise StoreError(f"reading {key} from {self.url} failed: {_short(e)}") from e
            raise self._fail(f"reading {key}", e) from e

    def get(self, name: str, *, mmap: bool = False):
        """The bytes of object ``name``: a writable buffer, or (``mmap=True``) a read-only map of a cached file.

        The writable buffer is a ``faultkit.recover._codec.ReadBuffer``: ``len()``
        and the buffer protocol (``memoryview(buf)``, ``bytes(buf)``,
        ``numpy.frombuffer``), not zero-filled before the download writes it;
        from 32 MiB a second thread faults its pages in while the body arrives
        (``ReadBuffer.populate``), so the download's copies rarely wait for a
        page fault.  ``FileNotFoundError`` if there is no such object;
        ``CorruptCheckpointError`` if its pointer record is malformed or its
        data object is missing or of the wrong size.
        """
        _check_name(name)
        kind, body, e_tag = self._head(name)
        if kind == "inline":
            if not mmap:
                buf = _codec.ReadBuffer(len(body))
                memoryview(buf)[:] = memoryview(body).cast("B")
                return buf
            return self._cache_put(name, f"i{e_tag}", len(body), lambda f: f.write(body))
        key, size, data_tag = body
        if mmap:
            def to_file(f):
                def make_sink():
                    f.seek(0)
                    f.truncate()
                    return f.write
                self._fetch(name, key, size, make_sink)

            return self._cache_put(name, f"p{data_tag or key}", size, to_file)
        out: dict = {}

        def make_sink():
            if "buf" not in out:  # allocated once the size is checked; reused by a retry
                buf = out["buf"] = _codec.ReadBuffer(size, huge_pages=_HUGE_PAGES)
                out["view"] = memoryview(buf)
                if size >= _codec.FRESH_BYTES:  # fresh pages: not yet faulted in
                    # The page faults of a large buffer, taken by a thread while the body
                    # arrives, not by the sink's copies (the bytes are kept either way).
                    t = threading.Thread(target=buf.populate, name="faultkit-populate", daemon=True)
                    try:
                        t.start()
                        out["populate"] = t
                    except RuntimeError:  # no thread to spare: the copies fault the pages in
                        pass
            view, pos = out["view"], [0]

            def sink(chunk) -> None:
                n = len(chunk)
                view[pos[0]:pos[0] + n] = memoryview(chunk).cast("B")
                pos[0] += n
            return sink

        try:
            self._fetch(name, key, size, make_sink)
        finally:
            if "populate" in out:
                out["populate"].join()
        return out["buf"] if "buf" in out else _codec.ReadBuffer(0)

    def get_index(self, name: str):
        """A buffer of the object's size holding its header, META, TOC and footer (other bytes zero).

        Enough for ``_codec.parse`` and ``read_meta`` without downloading the
        arrays: three ranged reads of a large object (a lazily zero-filled
        anonymous map: pages never written take no memory).
        """
        _check_name(name)
        kind, body, _ = self._head(name)
        if kind == "inline":
            return body
        key, size, _ = body
        if size < 4096:
            return self.get(name)
        ob = self._ob
        try:
            meta = self._call(f"reading {key}", lambda: ob.head(self._store, key))
        except FileNotFoundError:
            raise CorruptCheckpointError(f"data object {key} of {name} is missing") from None
        except StoreError:
            raise
        except Exception as e:
            raise self._fail(f"reading {key}", e) from e
        if meta["size"] != size:  # before mapping: a crafted size must not reserve memory
            raise CorruptCheckpointError(f"data object of {name} holds {meta['size']} bytes, its pointer says {size}")
        buf = _mmap.mmap(-1, size)
        try:
            tail = max(0, size - (256 << 10))
            head_end = min(size, 64 << 10)
            got = self._call(f"reading {key}", lambda: ob.get_ranges(self._store, key, starts=[0, tail],
                                                                     ends=[head_end, size]))
            buf[0:head_end] = bytes(got[0])
            buf[tail:size] = bytes(got[1])
            toc = int.from_bytes(buf[size - 64:size - 56], "little")
            meta_off = meta_stored = 0
            if 64 <= toc < tail:  # TOC starts before the tail we read
                buf[toc:tail] = bytes(self._call(f"reading {key}",
                                                 lambda: ob.get_range(self._store, key, start=toc, end=tail)))
            if 64 <= toc <= size - 64 - 96:
                rec = toc + 32  # section 0 = META: u32 kind, u32 flags, u64 offset, u64 length, u64 stored
                meta_off = int.from_bytes(buf[rec + 8:rec + 16], "little")
                meta_stored = int.from_bytes(buf[rec + 24:rec + 32], "little")
            if head_end < meta_off + meta_stored <= toc and meta_off < toc:
                lo, hi = max(meta_off, head_end), meta_off + meta_stored
                buf[lo:hi] = bytes(self._call(f"reading {key}",
                                              lambda: ob.get_range(self._store, key, start=lo, end=hi)))
        except FileNotFoundError:
            buf.close()
            raise CorruptCheckpointError(f"data object {key} of {name} is missing") from None
        except StoreError:
            buf.close()
            raise
        except Exception as e:
            buf.close()
            if isinstance(e, self._ob.exceptions.BaseError) and "range" in str(e).lower():
                raise CorruptCheckpointError(f"data object {key} of {name} is shorter than {size} bytes") from None
            raise self._fail(f"reading {key}", e) from e
        return buf

    def _cache_root(self) -> str:
        with self._cache_lock:
            if self._cache_dir is None:
                self._cache_dir = tempfile.mkdtemp(prefix="faultkit-objcache-")
                weakref.finalize(self, shutil.rmtree, self._cache_dir, True)
            os.makedirs(self._cache_dir, exist_ok=True)
            return self._cache_dir

    def _cache_path(self, name: str, version: str) -> str:
        tag = hashlib.sha256(f"{self.url}\0{name}\0{version}".encode()).hexdigest()[:24]
        return os.path.join(self._cache_root(), f"{name}.{tag}")

    def _cache_put(self, name: str, version: str, size: int, fill) -> "Union[_mmap.mmap, bytearray]":
        path = self._cache_path(name, version)
        try:
            f = open(path, "rb", buffering=0)
            if os.fstat(f.fileno()).st_size != size:
                f.close()
                raise FileNotFoundError(path)
        except FileNotFoundError:
            self._cache_evict(name)
            tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                with open(tmp, "wb") as out:
                    fill(out)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            f = open(path, "rb", buffering=0)
        with f:
            if size == 0:
                return bytearray()
            return _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)

    def _cache_evict(self, name: str) -> None:
        root = self._cache_dir
        if root is None or not os.path.isdir(root):
            return
        for n in os.listdir(root):
            if n.startswith(name + ".") and ".tmp-" not in n:
                try:
                    os.unlink(os.path.join(root, n))  # maps of it stay valid
                except OSError:
                    pass

    # ------------------------------------------------------------ listing, deleting

    def _list_keys(self, prefix: Optional[str] = None) -> List[str]:
        ob = self._ob
        try:
            if prefix is None:
                res = self._call("listing", lambda: ob.list_with_delimiter(self._store))
                return [o["path"] for o in res["objects"]]
            return [o["path"] for o in self._call("listing", lambda: ob.list(self._store, prefix=prefix).collect())]
        except StoreError:
            raise
        except Exception as e:
            raise self._fail("listing", e) from e

    def list(self) -> List[str]:
        """Names of the committed objects (commit objects; not the lease or data objects)."""
        return [k for k in self._list_keys() if _NAME.match(k)]

    def _delete_quietly(self, key: str) -> None:
        try:
            self._call(f"deleting {key}", lambda: self._ob.delete(self._store, key))
        except Exception:
            pass  # an orphan data object: cleanup() removes it later

    def delete(self, name: str) -> None:
        """Remove object ``name``: its commit object first, then its data objects."""
        _check_name(name)
        ob = self._ob
        try:
            self._call(f"deleting {name}", lambda: ob.delete(self._store, name))
        except FileNotFoundError:
            pass
        except StoreError:
            raise
        except Exception as e:
            raise self._fail(f"deleting {name}", e) from e
        if name in self._inline:  # committed inline by us: it has no data objects
            self._inline.discard(name)
        else:
            for key in self._list_keys(_DATA.rstrip("/")):
                m = _DATA_KEY.match(key)
                if m and m.group("name") == name:
                    self._delete_quietly(key)
        self._cache_evict(name)

    def cleanup(self) -> None:
        """Delete data objects no commit object references (left by writers that failed or were fenced).

        Call only while holding the lease.  Incomplete multipart uploads are
        invisible and cannot be listed through obstore: configure the bucket's
        AbortIncompleteMultipartUpload lifecycle rule (docs/objstore.md).
        """
        committed = set(self.list())
        by_name: Dict[str, List[str]] = {}
        for key in self._list_keys(_DATA.rstrip("/")):
            m = _DATA_KEY.match(key)
            if m:
                by_name.setdefault(m.group("name"), []).append(key)
        for name, keys in by_name.items():
            keep = None
            if name in committed:
                try:
                    kind, body, _ = self._head(name)
                    keep = body[0] if kind == "pointer" else None
                except (FileNotFoundError, CorruptCheckpointError):
                    keep = None
            for key in keys:
                if key != keep:
                    self._delete_quietly(key)


class _WriterError(Exception):
    """Wraps an exception raised by a ``put_atomic`` write callback (never retried)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _short(e: BaseException) -> str:
    text = str(e).split("\n\nDebug source:", 1)[0].strip()
    return f"{type(e).__name__}: {text[:600]}"
