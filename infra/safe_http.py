"""POSTs to URLs that clients gave (webhooks) without letting them point this service inward or hold it.

- Every address the host resolves to is checked public (infra.addresses) and the connection goes to one of
  those addresses, never to a fresh lookup of the name: a DNS answer that changes between the check and the
  connection (rebinding) cannot reach inside. For https the certificate is still checked against the name.
- Redirects are not followed (a 3xx is an answer like any other), and at most MAX_BODY bytes of an answer are
  read: a receiver cannot make us fetch elsewhere or read a stream forever.
- An attempt ends by its deadline, whatever the receiver does: urllib3's timeouts bound each read, not the
  sum, so a receiver dripping a byte now and then would hold a thread for as long as it liked; a watchdog
  shuts the socket of a request past its deadline.
- Connections are pooled per (scheme, host, port, address) in each process and reused; the checked addresses
  of a host are kept for RESOLVE_SECONDS.

Thread-safe: several threads of a process may post at once."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.client import HTTPException
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError, SSLError

from infra.addresses import UnsafeTarget, checked_addresses

__all__ = ["Answer", "UnsafeTarget", "post"]

MAX_BODY = 64 * 1024
RESOLVE_SECONDS = 60
POOL_SIZE = 8  # connections kept per target; more may be opened at once, and are then closed after use


@dataclass(frozen=True)
class Answer:
    """What came back: a status code, or why none did (`error`: short, safe to store and show the URL's owner)."""

    status: int | None = None
    error: str = ""


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float) -> Answer:
    """POSTs `body` to `url`, on a pooled connection to a checked address, within `timeout` seconds in all.
    Never raises for what the target does (refused, unreachable, slow, TLS): the Answer says it."""
    deadline = time.monotonic() + timeout
    try:
        host, port, addresses = _checked(url, allow_private=allow_private)
    except UnsafeTarget as exc:
        return Answer(error=f"refused: {exc}"[:300])
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    default_port = 443 if parts.scheme == "https" else 80
    host_header = _bracketed(host) if port == default_port else f"{_bracketed(host)}:{port}"
    headers = {**headers, "Host": host_header}
    error = ""
    for address in addresses:  # the next address only when this one could not be connected to
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pool = _pool(parts.scheme, host, port, address)
        try:
            with _watchdog.watching(deadline):
                response = pool.urlopen(
                    "POST", target, body=body, headers=headers, retries=False, redirect=False,
                    timeout=urllib3.Timeout(total=left), preload_content=False, assert_same_host=False,
                )  # fmt: skip
                # Read (so that the connection can be reused) and dropped. A longer answer is not read on: its
                # connection is closed instead.
                whole = len(response.read(MAX_BODY)) < MAX_BODY or not response.read(1)
                if not whole:
                    response.close()
                response.release_conn()
            return Answer(status=response.status)
        except (NewConnectionError, ConnectTimeoutError) as exc:
            error = _reason(exc)  # nothing was sent: the next address may do
        except (urllib3.exceptions.HTTPError, HTTPException, OSError) as exc:
            return Answer(error="timed out" if _watchdog.fired() or time.monotonic() >= deadline else _reason(exc))
    return Answer(error=error or "timed out")


def _reason(exc: BaseException) -> str:
    """Why an attempt failed, in words that name no URL (urllib3's messages may quote one)."""
    if isinstance(exc, SSLError | ssl.SSLError):
        return "TLS error"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, NewConnectionError):  # urllib3's kind of ConnectTimeoutError that is not a timeout
        return f"connection error ({type(exc).__name__})"
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return "timed out"
    return f"connection error ({type(exc).__name__})"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _NoQueries(logging.Filter):
    """urllib3 logs each request's path at DEBUG, query included, and a webhook URL's query may hold the
    receiver's own token: it is cut from urllib3's lines (of every caller's requests: a path alone still tells
    what was called)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(
                a.split("?", 1)[0] + "?…" if isinstance(a, str) and "?" in a else a for a in record.args
            )
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_NoQueries())


# --- resolving, with the checked addresses kept a while ------------------------------------------------------

_resolved: dict[tuple[str, bool], tuple[float, tuple[str, int, list[str]]]] = {}
_resolved_lock = threading.Lock()


def _checked(url: str, *, allow_private: bool) -> tuple[str, int, list[str]]:
    """checked_addresses(url), from the cache while it is fresh; only addresses that passed are kept, and a
    refusal is not kept (it is checked again next time)."""
    parts = urlsplit(url)
    key = (f"{parts.scheme}://{parts.netloc.lower()}", allow_private)
    now = time.monotonic()
    with _resolved_lock:
        cached = _resolved.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    found = checked_addresses(url, allow_private=allow_private)
    with _resolved_lock:
        _resolved[key] = (now + RESOLVE_SECONDS, found)
    return found


def forget_addresses() -> None:
    """Drops the kept lookups (a test that changes what may be called)."""
    with _resolved_lock:
        _resolved.clear()


# --- the watchdog ---------------------------------------------------------------------------------------------


class _Watchdog:
    """Shuts the socket of a request past its deadline, so that a blocked read returns at once.

    Invariant: a socket is shut only while the thread that registered it is inside `watching()`; once that
    block is left (under the lock) its socket is never touched again, so a connection given back to its pool
    is never shut by a deadline of the request before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, list] = {}  # thread id -> [deadline, socket or None, fired]
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    @contextlib.contextmanager
    def watching(self, deadline: float):
        me = threading.get_ident()
        with self._lock:
            self._watched[me] = [deadline, None, False]
            self._local.fired = False
            if self._thread is None or not self._thread.is_alive():  # a forked child has none: start its own
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                entry = self._watched.pop(me, None)
                self._local.fired = bool(entry and entry[2])

    def fired(self) -> bool:
        """Whether the last `watching()` block of this thread was cut short by its deadline."""
        return getattr(self._local, "fired", False)

    def sending(self, sock: socket.socket | None) -> None:
        """The socket this thread's request reads from (called by the connections, before the answer)."""
        with self._lock:
            entry = self._watched.get(threading.get_ident())
            if entry is not None:
                entry[1] = sock
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking: a registration from now on wakes the wait below
            with self._lock:
                now = time.monotonic()
                for entry in self._watched.values():
                    deadline, sock, fired = entry
                    if not fired and sock is not None and deadline <= now:
                        entry[2] = True
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                # Still connecting past its deadline: the connect timeout ends that; its socket wakes us.
                upcoming = [e[0] for e in self._watched.values() if not e[2] and (e[1] is not None or e[0] > now)]
            self._wake.wait(max(0.01, min(upcoming) - time.monotonic()) if upcoming else None)


_watchdog = _Watchdog()


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self):  # the request is sent: from here only the receiver decides how long it takes
        _watchdog.sending(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self):
        _watchdog.sending(self.sock)
        return super().getresponse()


# --- pools ----------------------------------------------------------------------------------------------------

_pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool(scheme: str, host: str, port: int, address: str) -> urllib3.HTTPConnectionPool:
    key = (scheme, host, port, address)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            if scheme == "https":
                # Connected to the address, but TLS speaks to (SNI) and verifies the certificate of the name.
                pool = urllib3.HTTPSConnectionPool(
                    address, port, maxsize=POOL_SIZE, block=False, retries=False, cert_reqs="CERT_REQUIRED",
                    server_hostname=host, assert_hostname=host,
                )  # fmt: skip
                pool.ConnectionCls = _WatchedHTTPSConnection
            else:
                pool = urllib3.HTTPConnectionPool(address, port, maxsize=POOL_SIZE, block=False, retries=False)
                pool.ConnectionCls = _WatchedHTTPConnection
            _pools[key] = pool
        return pool


def close_all() -> None:
    """Closes every pooled connection (a process that stops)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
