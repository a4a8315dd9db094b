"""A real SMTP server (aiosmtpd) in a thread: it records what it accepts and answers as scripted."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller

# The sink is test equipment: its session log (addresses included) is noise in a failure report.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self.latency = 0.0
        self.peers: set[tuple] = set()  # one (host, port) per client connection
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        with self.lock:
            self.peers.add(session.peer)
            reply = self.replies.popleft() if self.replies else "250 2.0.0 OK"
            if reply.startswith("250"):
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
        return reply


class SmtpSink:
    def __init__(self, port: int | None = None) -> None:
        self.handler = SinkHandler()
        self.port = port or free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

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
        """The next DATA commands get these replies, in order; then 250."""
        self.handler.replies.extend(replies)

    def set_latency(self, seconds: float) -> None:
        self.handler.latency = seconds

    def count_by_id(self) -> Counter[str]:
        return Counter(r.email_id for r in self.received)

    def provider(self, name: str = "sink") -> dict:
        """A MAIL_PROVIDERS entry that sends here."""
        return {"name": name, "backend": "smtp", "options": {"host": "127.0.0.1", "port": self.port, "timeout": 10}}
