"""`manage.py smtpd`: the SMTP submission door (emails/smtp_door.py), listening on MAIL_SMTP_LISTEN."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
import warnings

from aiosmtpd.smtp import SMTP
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from emails.smtp_door import SubmissionHandler

log = logging.getLogger(__name__)
# aiosmtpd logs each command line at INFO, addresses included: its warnings only.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# After SIGTERM: sessions storing a message get this long to answer it (a store is bounded by
# MAIL_DATABASE_TIMEOUT); a client cut off before its reply sends the message again.
STOP_GRACE_SECONDS = 10
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Command(BaseCommand):
    help = (
        "Runs the SMTP submission server on MAIL_SMTP_LISTEN: AUTH with an API key as the password, STARTTLS "
        "with MAIL_SMTP_TLS_CERT and MAIL_SMTP_TLS_KEY (without them, only on a loopback address)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help="Processes serving the address (Linux: SO_REUSEPORT, the kernel spreads connections over them); "
            "by default MAIL_SMTP_PROCESSES, or one per core.",
        )

    def handle(self, *args, processes: int | None = None, **options):
        host, port = listen_address(settings.MAIL_SMTP_LISTEN)
        tls_context = server_tls_context(settings.MAIL_SMTP_TLS_CERT, settings.MAIL_SMTP_TLS_KEY)
        if tls_context is None and not is_loopback(host):
            raise CommandError(
                f"MAIL_SMTP_LISTEN is {settings.MAIL_SMTP_LISTEN}, not a loopback address, and no TLS certificate "
                "is configured: API keys would cross the network in clear. Set MAIL_SMTP_TLS_CERT and "
                "MAIL_SMTP_TLS_KEY (PEM files), or listen on 127.0.0.1."
            )
        processes = process_count(processes)
        if tls_context is None:
            # aiosmtpd warns, per connection, of AUTH without TLS: on loopback that is the configuration chosen.
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        from infra.database import bound_every_query

        bound_every_query()  # as web workers: a frozen database costs a message seconds, not a thread forever
        where = f"{host}:{port}"
        if processes == 1:
            sockets = listening_sockets(host, port, shared=False)
            self._announce(where, 1)
            asyncio.run(self._serve(sockets, tls_context, where))
            return
        # Every process's sockets listen before any process starts: the address answers at once, and one that
        # is taken is an error here, before anything runs.
        ensure_free(host, port)
        socket_sets = [listening_sockets(host, port, shared=True) for _ in range(processes)]
        connections.close_all()  # a child must not share the parent's connection
        children = set()
        for own in socket_sets:
            pid = os.fork()
            if pid == 0:
                self._child(own, [s for other in socket_sets if other is not own for s in other], tls_context, where)
            children.add(pid)
        for sockets in socket_sets:
            for sock in sockets:
                sock.close()  # the children's now: a socket held here would queue connections nobody accepts
        self._announce(where, processes)
        sys.exit(supervise(children))

    def _announce(self, where: str, processes: int) -> None:
        self.stdout.write(f"Listening for SMTP on {where} ({processes} process{'es' if processes > 1 else ''})")
        self.stdout.flush()

    def _child(self, sockets: list[socket.socket], others: list[socket.socket], tls_context, where: str) -> None:
        """A forked process serving `sockets` until SIGTERM or SIGINT; never returns into the parent's code."""
        code = 1
        try:
            for sock in others:
                sock.close()
            die_with_parent()
            asyncio.run(self._serve(sockets, tls_context, where))
            code = 0
        except BaseException:
            log.exception("SMTP submission process %s failed", os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    async def _serve(self, sockets: list[socket.socket], tls_context: ssl.SSLContext | None, where: str) -> None:
        loop = asyncio.get_running_loop()
        handler = SubmissionHandler()
        hostname = socket.getfqdn()  # once: aiosmtpd would look it up per connection, on the loop
        options = {
            "hostname": hostname,
            "data_size_limit": settings.MAIL_MAX_EMAIL_BYTES,  # advertised as SIZE; over it, 552
            "enable_SMTPUTF8": True,
            "auth_required": True,  # MAIL FROM before AUTH: 530
            # With a certificate: STARTTLS before anything else, AUTH only after it. Without one (loopback
            # only, checked above), AUTH in clear.
            "tls_context": tls_context,
            "require_starttls": tls_context is not None,
            "auth_require_tls": tls_context is not None,
        }
        servers = [await loop.create_server(lambda: SMTP(handler, **options), sock=sock) for sock in sockets]
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info("SMTP submission on %s (%s)", where, "STARTTLS" if tls_context else "no TLS, loopback")
        await stopping.wait()
        for server in servers:
            server.close()  # no new connections
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while handler.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        log.info("SMTP submission stopped (%s messages unanswered)", handler.in_flight)
        handler.executor.shutdown(wait=False, cancel_futures=True)


def process_count(requested: int | None) -> int:
    """--processes, else MAIL_SMTP_PROCESSES, else the cores this process may use; 1 where the kernel does not
    spread connections over the sockets sharing a port (only Linux's SO_REUSEPORT does)."""
    spread = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
    if requested is not None:
        if requested < 1:
            raise CommandError(f"--processes must be at least 1, not {requested}.")
        if requested > 1 and not spread:
            raise CommandError("--processes above 1 needs Linux (SO_REUSEPORT spreads connections over them).")
        return requested
    configured = settings.MAIL_SMTP_PROCESSES
    if configured:
        return process_count(int(configured))
    return len(os.sched_getaffinity(0)) if spread else 1


def addresses(host: str, port: int) -> list[tuple]:
    """(family, sockaddr) of each address `host` names, as asyncio's create_server binds them."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise CommandError(f"MAIL_SMTP_LISTEN names {host!r}, which does not resolve: {exc}") from None
    return list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))


def listening_sockets(host: str, port: int, *, shared: bool) -> list[socket.socket]:
    """A listening socket on each address of host; `shared`: each with SO_REUSEPORT, so that the sockets of the
    other processes listen on the same address beside it."""
    sockets = []
    try:
        for family, sockaddr in addresses(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(100)  # asyncio's default backlog
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from None
    return sockets


def ensure_free(host: str, port: int) -> None:
    """Raises CommandError when something listens on the address already: sockets with SO_REUSEPORT would
    otherwise share it with another server of the same user (an smtpd left running) without a word."""
    for sock in listening_sockets(host, port, shared=False):
        sock.close()


def die_with_parent() -> None:
    """Asks Linux for a SIGTERM when the parent process ends, however it ends (SIGKILL too): a child never
    keeps serving on its own."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0 or os.getppid() != parent:
        os._exit(1)  # the parent is gone already


def supervise(children: set[int]) -> int:
    """Waits for the children; SIGTERM and SIGINT are passed on to them (each finishes the messages it is
    storing). A child that ends unasked ends them all, and this process with status 1, for the supervisor
    (honcho, Docker, systemd) to see. Returns the exit status."""
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while children:
        pid, wait_status = os.wait()
        if pid not in children:
            continue
        children.remove(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        # Asked to stop, a child ends with 0, or by the SIGTERM itself when it came before its loop took it.
        if not stopping or code not in (0, -signal.SIGTERM):
            log.error("SMTP submission process %s ended (status %s): stopping the others", pid, code)
            status = 1
            stop(signal.SIGTERM, None)
    return status


def listen_address(value: str) -> tuple[str, int]:
    """(host, port) of "host:port" or "[v6]:port"."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"MAIL_SMTP_LISTEN must be host:port (such as 127.0.0.1:2587), not {value!r}.")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whichever addresses it has, it may be reached from elsewhere


def server_tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not cert or not key:
        missing = "MAIL_SMTP_TLS_KEY" if cert else "MAIL_SMTP_TLS_CERT"
        raise CommandError(f"{missing} is not set: STARTTLS needs both MAIL_SMTP_TLS_CERT and MAIL_SMTP_TLS_KEY.")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(
            f"MAIL_SMTP_TLS_CERT and MAIL_SMTP_TLS_KEY cannot be loaded as a PEM certificate and its key: {exc}"
        ) from None
    return context
