"""`manage.py smtpd`: the SMTP submission door (emails/smtp_door.py), listening on MAIL_SMTP_LISTEN."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import ssl
import time
import warnings

from aiosmtpd.smtp import SMTP
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from emails.smtp_door import SubmissionHandler

log = logging.getLogger(__name__)
# aiosmtpd logs each command line at INFO, addresses included: its warnings only.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# After SIGTERM: sessions storing a message get this long to answer it (a store is bounded by
# MAIL_DATABASE_TIMEOUT); a client cut off before its reply sends the message again.
STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = (
        "Runs the SMTP submission server on MAIL_SMTP_LISTEN: AUTH with an API key as the password, STARTTLS "
        "with MAIL_SMTP_TLS_CERT and MAIL_SMTP_TLS_KEY (without them, only on a loopback address)."
    )

    def handle(self, *args, **options):
        host, port = listen_address(settings.MAIL_SMTP_LISTEN)
        tls_context = server_tls_context(settings.MAIL_SMTP_TLS_CERT, settings.MAIL_SMTP_TLS_KEY)
        if tls_context is None and not is_loopback(host):
            raise CommandError(
                f"MAIL_SMTP_LISTEN is {settings.MAIL_SMTP_LISTEN}, not a loopback address, and no TLS certificate "
                "is configured: API keys would cross the network in clear. Set MAIL_SMTP_TLS_CERT and "
                "MAIL_SMTP_TLS_KEY (PEM files), or listen on 127.0.0.1."
            )
        if tls_context is None:
            # aiosmtpd warns, per connection, of AUTH without TLS: on loopback that is the configuration chosen.
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        from infra.database import bound_every_query

        bound_every_query()  # as web workers: a frozen database costs a message seconds, not a thread forever
        asyncio.run(self._serve(host, port, tls_context))

    async def _serve(self, host: str, port: int, tls_context: ssl.SSLContext | None) -> None:
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
        server = await loop.create_server(lambda: SMTP(handler, **options), host=host, port=port)
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info("SMTP submission on %s:%s (%s)", host, port, "STARTTLS" if tls_context else "no TLS, loopback")
        self.stdout.write(f"Listening for SMTP on {host}:{port}", ending="\n")
        self.stdout.flush()
        await stopping.wait()
        server.close()  # no new connections
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while handler.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        log.info("SMTP submission stopped (%s messages unanswered)", handler.in_flight)
        handler.executor.shutdown(wait=False, cancel_futures=True)


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
