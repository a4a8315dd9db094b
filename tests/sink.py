"""A real SMTP server (aiosmtpd) in a thread: it records what it accepts and answers as scripted."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller

from launcher.embedded import free_port

# The sink is test equipment: its session log (addresses included) is noise in a failure report.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# Scripted behaviours besides SMTP replies (SmtpSink.script, SmtpSink.script_command).
DROP = "drop"  # close the connection instead of replying
HANG = "hang"  # never reply: the client's timeout ends the wait
OK_THEN_DROP = "250 OK, then drop"  # reply 250, then close the connection: the client's next command gets no reply


@dataclass
class Received:
    email_id: str
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    raw: bytes
    at: float


class SinkHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: deque[str] = deque()  # scripted replies to DATA, then 250
        self.command_replies: dict[str, deque[str]] = {"MAIL": deque(), "RCPT": deque()}  # likewise
        self.latency = 0.0
        self.peers: set[tuple] = set()  # one (host, port) per client connection
        self.in_data = 0  # messages being answered now (waiting out the latency)
        self.most_in_data = 0
        self.lock = threading.Lock()

    def _next_reply(self, command: str, default: str) -> str:
        with self.lock:
            replies = self.replies if command == "DATA" else self.command_replies[command]
            return replies.popleft() if replies else default

    @staticmethod
    async def _answer(server, reply: str) -> str:
        """The reply for aiosmtpd to send, or (for DROP, HANG, OK_THEN_DROP) no return: aiosmtpd cancels this
        handler when the connection closes."""
        if reply == OK_THEN_DROP:
            await server.push("250 OK")
        if reply in (DROP, OK_THEN_DROP):
            server.transport.close()
        if reply in (DROP, HANG, OK_THEN_DROP):
            await asyncio.get_running_loop().create_future()  # never done
        return reply

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        reply = self._next_reply("MAIL", "250 OK")
        if reply.startswith("250"):  # what aiosmtpd does without this hook
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return await self._answer(server, reply)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        reply = self._next_reply("RCPT", "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return await self._answer(server, reply)

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.latency:
            with self.lock:
                self.in_data += 1
                self.most_in_data = max(self.most_in_data, self.in_data)
            try:
                await asyncio.sleep(self.latency)
            finally:
                with self.lock:
                    self.in_data -= 1
        reply = self._next_reply("DATA", "250 2.0.0 OK")
        with self.lock:
            self.peers.add(session.peer)
            # A message whose reply is lost (DROP, HANG) is kept, as a server that queued it would have.
            if reply.startswith("250") or reply in (DROP, HANG):
                message = message_from_bytes(envelope.content)
                self.received.append(
                    Received(
                        email_id=message.get("X-Mailservice-Id", ""),
                        mail_from=envelope.mail_from,
                        rcpt_tos=list(envelope.rcpt_tos),
                        message=message,
                        raw=envelope.content,
                        at=time.time(),
                    )
                )
        return await self._answer(server, reply)


class SmtpSink:
    def __init__(self, port: int | None = None, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """ssl_context: a server context for implicit TLS (clients connect with SMTP_SSL)."""
        self.handler = SinkHandler()
        self.port = port or free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ssl_context=ssl_context)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def connections(self) -> int:
        """How many client connections carried messages."""
        with self.handler.lock:
            return len(self.handler.peers)

    def script(self, *replies: str) -> None:
        """The next DATA commands get these replies (or DROP, HANG) to their message, in order; then 250."""
        with self.handler.lock:
            self.handler.replies.extend(replies)

    def script_command(self, command: str, *replies: str) -> None:
        """The next MAIL or RCPT commands get these replies (or DROP, HANG, OK_THEN_DROP), in order; then 250."""
        with self.handler.lock:
            self.handler.command_replies[command].extend(replies)

    def set_latency(self, seconds: float) -> None:
        self.handler.latency = seconds

    @property
    def most_at_once(self) -> int:
        """The most messages it was answering at once (with a latency set): the sends its clients had in flight."""
        with self.handler.lock:
            return self.handler.most_in_data

    def count_by_id(self) -> Counter[str]:
        return Counter(r.email_id for r in self.received)

    def provider(self, name: str = "sink") -> dict:
        """A MAIL_PROVIDERS entry that sends here."""
        return {"name": name, "backend": "smtp", "options": {"host": "127.0.0.1", "port": self.port, "timeout": 10}}
