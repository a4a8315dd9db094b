"""Rendering stored templates with a client's context, bounded in time, size and memory.

The template is Django's language and the context is the client's: a loop over a large context, nested
loops, or a filter that pads to a billion characters can take any time and memory. So templates render in
render processes, one per thread rendering at the moment (kept for the next render): the web thread waits
until its deadline, then kills the process (a thread cannot be stopped, a process can; gunicorn runs
threads, so no SIGALRM), and while it renders a process may grow its address space only by a budget
(RLIMIT_AS), so a huge allocation fails instead of happening. Should the web process die mid-render, its
render process dies with it (PR_SET_PDEATHSIG), and at worst ends after the CPU time it was allowed
(RLIMIT_CPU). A render process gets no environment and none of the settings but those the template engine
reads: no secret is in it.

Why processes rather than an engine whose builtins count loop turns and output: every amplifying builtin
would need a bound of its own (ljust, center, stringformat, floatformat, add, lorem, dictsort, urlize,
truncatewords_html, ...), a count cannot interrupt one slow call in C, and templates using a builtin left out
would change. A process is stopped whatever the template does, and the renderer is Django's own engine,
configured as before: normal templates render exactly as they did. The cost is a socket round trip
per email, measured in the README."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from django.conf import settings
from django.template import Context, Engine, Template, TemplateSyntaxError
from django.utils.formats import FORMAT_SETTINGS

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
# Render processes kept idle per web process: as many as its threads can render at once (gunicorn's
# post_worker_init sets its `threads` and starts them), so that a render never waits for a start once warm.
KEEP_IDLE = 8
# A render process is ready in about 0.1 s (an interpreter importing the template engine). A request waits
# for a start only until its render deadline; a start still not ready after this is broken and is killed.
START_SECONDS = 30
# The settings Django's template engine and builtins read (formats, time zone, translations). A render
# process gets only these, from the web process, and never imports the project's settings or sees the
# environment: no secret reaches it.
CHILD_SETTINGS = (
    "DEBUG",  # the {% debug %} tag
    "DEFAULT_CHARSET",
    "FORMAT_MODULE_PATH",
    "LANGUAGE_CODE",
    "LANGUAGES",
    "LANGUAGES_BIDI",
    "TIME_ZONE",
    "USE_I18N",
    "USE_THOUSAND_SEPARATOR",
    "USE_TZ",
    *sorted(FORMAT_SETTINGS),
)
CHILD_ENVIRONMENT = ("TZ", "LANG", "LC_ALL", "LC_CTYPE")  # no secrets; the same clock and text encoding
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

Parts = tuple[str, str, str]  # the template's subject, text and html sources


class RenderUnavailable(Exception):
    """No render process could be started for this request (the system is out of processes, memory or file
    descriptors, or a start did not finish before the request's render deadline): the server's fault, not
    the template's or the context's, so no RenderFailure."""


@dataclass(frozen=True)
class RenderFailure:
    """Why one context did not render: `field` is the request field to blame ("template" or "context")."""

    field: str
    reason: str


class RenderSession:
    """Renders one request's templates, in one render process taken when the first is rendered: all of them,
    and taking or starting that process, within `seconds` of the first (a render still running then is
    killed, and the rest fail at once), each at most `max_bytes` (its three parts encoded) and all together
    at most `max_total_bytes`. Close it (or use it as a context manager) to give the process back.

    `render` raises RenderUnavailable when no render process can be had in time."""

    def __init__(self, *, seconds: float, max_bytes: int, max_total_bytes: int) -> None:
        self.seconds, self.max_bytes, self.max_total_bytes = seconds, max_bytes, max_total_bytes
        self._renderer: _Renderer | None = None
        self._deadline: float | None = None
        self._total = 0

    def render(self, parts: Parts, context: dict[str, Any]) -> dict[str, str] | RenderFailure:
        """The parts rendered into {"subject", "text", "html"}, or the RenderFailure saying why not."""
        late = RenderFailure("template", f"it takes more than {self.seconds:g} s with this context.")
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        elif time.monotonic() >= self._deadline:
            return late
        # The render process may die (the OOM killer, an operator) after take() saw it alive, or during the
        # render. A render is a function of its input alone, so it is sent once more, to another process and
        # within the same deadline: only a render whose process dies twice is blamed on the template.
        for _attempt in range(2):
            if self._renderer is None:
                self._renderer = _POOL.take(self._deadline)
            renderer = self._renderer
            try:
                renderer.connection.send((parts, context, self.max_bytes, self._deadline - time.monotonic()))
                if not renderer.connection.poll(max(0.0, self._deadline - time.monotonic())):
                    self._renderer = None
                    renderer.stop()
                    _POOL.start_spare()  # so that the next request need not wait for one to start
                    return late
                result, retiring = renderer.connection.recv()
            except (EOFError, OSError):  # it died, before or during this render
                self._renderer = None
                renderer.stop()
                continue
            break
        else:
            return RenderFailure("template", "its render process stopped.")
        if isinstance(result, tuple):  # plain data across the socket: (field, reason)
            result = RenderFailure(*result)
        if retiring:
            self._renderer = None
            renderer.stop()
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
    """One render process (a fresh interpreter running this module) and this side of its socket. Raises
    OSError when it cannot be started."""

    def __init__(self) -> None:
        here, there = socket.socketpair()
        try:
            # Its own interpreter, not a fork: a web process's other threads may hold locks a fork would copy.
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                [sys.executable, "-m", __name__, str(there.fileno()), str(os.getpid())],
                pass_fds=[there.fileno()],
                stdin=subprocess.DEVNULL,
                env=_child_environment(),
            )
        except BaseException:
            here.close()
            raise
        finally:
            there.close()
        self.connection = Connection(here.detach())
        self.started = time.monotonic()
        self.ready = False
        _RENDERERS.add(self)
        try:
            self.connection.send(_child_settings())
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, deadline: float) -> bool:
        """Whether it is ready by `deadline`; raises EOFError or OSError when it died starting."""
        if not self.ready:
            if not self.connection.poll(max(0.0, deadline - time.monotonic())):
                return False
            self.connection.recv()
            self.ready = True
        return True

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kills it and reaps it (no zombie is left); an idle render process has nothing to finish."""
        self.connection.close()
        self.process.kill()  # nothing when it already ended and was reaped
        self.process.wait()


class _Pool:
    """The render processes of this web process. Invariant: a renderer is in `_idle` (started, maybe not
    ready yet), or held by the one thread rendering with it, which gives it back or stops it."""

    def __init__(self) -> None:
        self.keep_idle = KEEP_IDLE
        self._lock = threading.Lock()
        self._idle: list[_Renderer] = []

    def take(self, deadline: float) -> _Renderer:
        """A ready render process: an idle one, else a new one, by `deadline`. One that fails to start (or
        died idle) is replaced once; raises RenderUnavailable."""
        failure: BaseException | None = None
        for _attempt in range(2):
            renderer = self._pop()
            try:
                renderer = renderer or _Renderer()
                if not renderer.wait_ready(deadline):
                    self.give_back(renderer)  # a start slowed by load: the next request may use it
                    raise RenderUnavailable("No template render process was ready in time.")
                return renderer
            except (EOFError, OSError) as exc:  # could not start (EAGAIN, EMFILE, ENOMEM), or died starting
                if renderer is not None:
                    renderer.stop()
                failure = exc
        raise RenderUnavailable(f"A template render process could not be started: {failure!r}") from failure

    def _pop(self) -> _Renderer | None:
        """The idle renderer used last (its templates are compiled), preferring one known ready; one that
        died idle is reaped."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                ready = [i for i, renderer in enumerate(self._idle) if renderer.ready]
                renderer = self._idle.pop(ready[-1] if ready else -1)
            if renderer.alive():
                return renderer
            renderer.stop()

    def give_back(self, renderer: _Renderer) -> None:
        if renderer.ready or time.monotonic() - renderer.started < START_SECONDS:
            with self._lock:
                if len(self._idle) < self.keep_idle:
                    self._idle.append(renderer)
                    return
        renderer.stop()

    def start_spare(self) -> None:
        """Starts a render process for a later request, unless enough are idle; without waiting for it."""
        with self._lock:
            if len(self._idle) >= self.keep_idle:
                return
        # No process to spare now (OSError): a request will start one, or answer RenderUnavailable.
        with contextlib.suppress(OSError):
            self.give_back(_Renderer())

    def start(self, count: int) -> None:
        """Keeps `count` render processes idle, and starts them now (gunicorn's post_worker_init)."""
        self.keep_idle = count
        for _ in range(count):
            self.start_spare()

    def _after_fork(self) -> None:
        """In a forked child: the lock may have been held by a thread that is not there, and the render
        processes are the parent's. Their sockets are closed here (only this copy), so that each still sees
        the end of its socket when the parent closes it."""
        self._lock = threading.Lock()
        self._idle = []
        for renderer in list(_RENDERERS):
            renderer.connection.close()
        _RENDERERS.clear()


_RENDERERS: weakref.WeakSet[_Renderer] = weakref.WeakSet()  # this process's, for _after_fork
_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL._after_fork)
start = _POOL.start


def _child_environment() -> dict[str, str]:
    """A render process's environment: where this code is, and nothing of the web process's secrets."""
    env = {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}
    return {**env, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}


def _child_settings() -> dict[str, Any]:
    values = {name: getattr(settings, name) for name in CHILD_SETTINGS}
    values["LOCALE_PATHS"] = [str(path) for path in settings.LOCALE_PATHS]
    if settings.USE_I18N:
        # The installed apps' translations, as LOCALE_PATHS after the project's (the same precedence), so
        # that a render process need not import the apps.
        from django.apps import apps

        found = (os.path.join(config.path, "locale") for config in apps.get_app_configs())
        values["LOCALE_PATHS"] += [path for path in found if os.path.isdir(path)]
    return values


# In the render process.


class _TooLarge(Exception):
    pass


def _main(fd: int, parent: int) -> None:
    connection = Connection(fd)
    _die_with(parent)
    # RLIMIT_CPU ends a render with SIGXCPU, which would dump its memory (hundreds of MB) to disk.
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    settings.configure(**connection.recv())
    _serve(connection)


def _die_with(parent: int) -> None:
    """Makes this process end with the web process, even mid-render: Linux sends SIGKILL when the thread that
    started it ends (gunicorn's threads last as long as their process; a render process killed early is
    replaced at its next render). Elsewhere, RLIMIT_CPU ends a render whose web process is gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no C library, or no prctl in it
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def _serve(connection: Connection) -> None:
    """A render process: renders what it receives and sends back each result, until the web process closes
    the pipe. Exits after a render that left it grown past RETIRE_ABOVE (Python keeps freed memory)."""
    if settings.USE_I18N:  # translations need the app registry (empty here); formats and time zones need no setup
        import django

        django.setup(set_prefix=False)
    connection.send("ready")
    start_size = _address_space()
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        try:
            parts, context, max_bytes, seconds = connection.recv()
        except (EOFError, OSError):  # the web process closed its end, or is gone
            return
        _limit_cpu(seconds, cpu_hard)
        result = _render_one(parts, context, max_bytes)
        retiring = _address_space() - start_size > RETIRE_ABOVE
        connection.send((result, retiring))
        if retiring:
            return


def _limit_cpu(seconds: float, hard: int) -> None:
    """A backstop, should the web process not kill a render at its deadline (it died, say): the kernel ends
    this process (SIGXCPU) once the render has used the seconds it has left, and one more, of CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    limit = math.ceil(usage.ru_utime + usage.ru_stime + max(seconds, 0) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


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
    _main(int(sys.argv[1]), int(sys.argv[2]))
