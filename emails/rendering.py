"""Rendering stored templates with a client's context, bounded in time, size and memory.

The template is Django's language and the context is the client's: a loop over a large context, nested
loops, or a filter that pads to a billion characters can take any time and memory. So templates render in
render processes, one per thread rendering at the moment (kept for the next render): the web thread waits
until its deadline, then kills the process (a thread cannot be stopped, a process can; gunicorn runs
threads, so no SIGALRM), and while it renders a process may grow its address space only by a budget
(RLIMIT_AS), so a huge allocation fails instead of happening.

Why processes rather than an engine whose builtins count loop turns and output: every amplifying builtin
would need a bound of its own (ljust, center, stringformat, floatformat, add, lorem, dictsort, urlize,
truncatewords_html, ...), a count cannot interrupt one slow call in C, and templates using a builtin left out
would change. A process is stopped whatever the template does, and the renderer is Django's own engine,
configured as before: normal templates render exactly as they did. The cost is a socket round trip
per email, measured in the README."""

from __future__ import annotations

import functools
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from django.conf import settings
from django.template import Context, Engine, Template, TemplateSyntaxError

# Text and subjects are not HTML: only the html part escapes what the context brings in.
TEXT_ENGINE = Engine(autoescape=False)
HTML_ENGINE = Engine(autoescape=True)
PARTS = ("subject", "text", "html")

# What a render may add to its process's address space, beyond the largest output allowed: the pieces of a
# part, the part joined and escaped, and its encoding each hold a copy.
MEMORY_BUDGET = 64 * 1024 * 1024
MEMORY_PER_OUTPUT_BYTE = 8
# A render process that grew past this (Python keeps freed memory) is replaced.
RETIRE_ABOVE = 512 * 1024 * 1024
# Render processes kept idle per web process; more start when more threads render at once.
KEEP_IDLE = 4
# A new render process is ready in about 0.1 s (an interpreter importing the template engine and the
# settings); this bounds a broken start. A start is not part of a request's render time.
START_SECONDS = 30

Parts = tuple[str, str, str]  # the template's subject, text and html sources


@dataclass(frozen=True)
class RenderFailure:
    """Why one context did not render: `field` is the request field to blame ("template" or "context")."""

    field: str
    reason: str


class RenderSession:
    """Renders one request's templates, in one render process taken when the first is rendered: all of them
    within `seconds` of that (a render still running then is killed, and the rest fail at once), each at most
    `max_bytes` (its three parts encoded) and all together at most `max_total_bytes`. Close it (or use it as
    a context manager) to give the process back."""

    def __init__(self, *, seconds: float, max_bytes: int, max_total_bytes: int) -> None:
        self.seconds, self.max_bytes, self.max_total_bytes = seconds, max_bytes, max_total_bytes
        self._renderer: _Renderer | None = None
        self._deadline: float | None = None
        self._total = 0

    def render(self, parts: Parts, context: dict[str, Any]) -> dict[str, str] | RenderFailure:
        """The parts rendered into {"subject", "text", "html"}, or the RenderFailure saying why not."""
        late = RenderFailure("template", f"it takes more than {self.seconds:g} s with this context.")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return late
        if self._renderer is None:
            self._renderer = _POOL.take()
            if self._deadline is None:
                self._deadline = time.monotonic() + self.seconds
        renderer = self._renderer
        try:
            renderer.connection.send((parts, context, self.max_bytes))
            if not renderer.connection.poll(max(0.0, self._deadline - time.monotonic())):
                self._renderer = None
                renderer.kill()
                _POOL.start_spare()  # so that the next request need not wait for one to start
                return late
            result, retiring = renderer.connection.recv()
            if isinstance(result, tuple):  # plain data across the socket: (field, reason)
                result = RenderFailure(*result)
        except (EOFError, OSError):  # the render process died (the kernel's OOM killer, a crash)
            self._renderer = None
            renderer.kill()
            return RenderFailure("template", "its render process stopped.")
        if retiring:
            self._renderer = None
            renderer.close()
        if isinstance(result, dict):
            self._total += sum(len(part.encode()) for part in result.values())
            if self._total > self.max_total_bytes:
                return RenderFailure(
                    "template", f"this request's emails render more than {self.max_total_bytes} bytes."
                )
        return result

    def close(self) -> None:
        if self._renderer is not None:
            _POOL.give_back(self._renderer)
            self._renderer = None

    def __enter__(self) -> RenderSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Renderer:
    """One render process (a fresh interpreter running this module) and this side of its socket."""

    def __init__(self) -> None:
        here, there = socket.socketpair()
        # Its own interpreter, not a fork: a web process's other threads may hold locks a fork would copy.
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [sys.executable, "-m", __name__, str(there.fileno())],
            pass_fds=[there.fileno()],
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
        )
        there.close()
        self.connection = Connection(here.detach())
        self._ready = False

    def wait_ready(self) -> None:
        if self._ready:
            return
        if not self.connection.poll(START_SECONDS):
            self.kill()
            raise RuntimeError(f"A template render process did not start within {START_SECONDS} s.")
        self.connection.recv()
        self._ready = True

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.connection.close()

    def close(self) -> None:
        self.connection.close()  # the process sees the end of its socket and exits


class _Pool:
    """The render processes of this web process. Invariant: a renderer is in `_idle` (started, maybe not
    ready yet), or held by the one thread rendering with it, which gives it back, closes it, or kills it
    (never both)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Renderer] = []
        self._pid = os.getpid()

    def take(self) -> _Renderer:
        with self._lock:
            if self._pid != os.getpid():  # forked: the sockets are the parent's
                self._idle, self._pid = [], os.getpid()
            renderer = self._idle.pop() if self._idle else None
        renderer = renderer or _Renderer()
        renderer.wait_ready()
        return renderer

    def give_back(self, renderer: _Renderer) -> None:
        with self._lock:
            if len(self._idle) < KEEP_IDLE:
                self._idle.append(renderer)
                return
        renderer.close()

    def start_spare(self) -> None:
        with self._lock:
            if len(self._idle) >= KEEP_IDLE:
                return
        self.give_back(_Renderer())


_POOL = _Pool()


# In the render process.


class _TooLarge(Exception):
    pass


def _serve(connection: Connection) -> None:
    """A render process: renders what it receives and sends back each result, until the web process closes
    the pipe. Exits after a render that left it grown past RETIRE_ABOVE (Python keeps freed memory)."""
    if settings.USE_I18N:  # translations come from the installed apps; formats and time zones need no setup
        import django

        django.setup(set_prefix=False)
    connection.send("ready")
    start_size = _address_space()
    while True:
        try:
            parts, context, max_bytes = connection.recv()
        except (EOFError, OSError):  # the web process closed its end, or is gone
            return
        result = _render_one(parts, context, max_bytes)
        retiring = _address_space() - start_size > RETIRE_ABOVE
        connection.send((result, retiring))
        if retiring:
            return


def _render_one(parts: Parts, context: dict[str, Any], max_bytes: int) -> dict[str, str] | tuple[str, str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    budget = MEMORY_BUDGET + MEMORY_PER_OUTPUT_BYTE * max_bytes
    limit = _address_space() + budget
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        rendered, size = {}, 0
        for name, source in zip(PARTS, parts, strict=True):
            engine = HTML_ENGINE if name == "html" else TEXT_ENGINE
            rendered[name] = (
                _compiled(source, engine.autoescape).render(Context(context, autoescape=engine.autoescape))
                if source
                else ""
            )
            size += len(rendered[name].encode())
            if size > max_bytes:
                raise _TooLarge
        return rendered
    except _TooLarge:
        return ("template", f"it renders more than {max_bytes} bytes with this context.")
    except MemoryError:
        return ("template", f"it needs more than {budget // 2**20} MB with this context.")
    except TemplateSyntaxError as exc:
        return ("template", str(exc))
    except Exception as exc:  # a context value whose rendering fails
        return ("context", str(exc))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@functools.lru_cache(maxsize=64)
def _compiled(source: str, autoescape: bool) -> Template:
    return (HTML_ENGINE if autoescape else TEXT_ENGINE).from_string(source)


def _address_space() -> int:
    """This process's virtual memory size, in bytes (what RLIMIT_AS limits)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
