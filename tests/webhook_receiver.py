"""A real webhook receiver (HTTP/1.1 on loopback, in a thread): it verifies every request with `standardwebhooks`,
records it, and answers as scripted."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.sink import free_port

# Scripted answers besides status codes.
HANG = "hang"  # read the request, never answer (until the receiver stops)
DRIP = "drip"  # answer one byte of the status line a second, forever


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    event: dict | None  # the verified body; None when it did not verify
    error: str  # why it did not verify
    peer: tuple  # (host, port) of the client's connection
    answered: int | str
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    """Answers `script` in order (status codes, HANG, DRIP), then `answer(request)` (default 200 to all).
    `secret` (whsec_...): every request is verified with it; without one nothing verifies."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.requests: list[Request] = []
        self.script: deque[int | str] = deque()
        self.answer: Callable[[Request], int | str] = lambda request: 200
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def first_delivery_fails(self, status: int = 500) -> None:
        """Answers `status` to each webhook-id's first request, 200 to the rest."""
        seen: set[str] = set()

        def answer(request: Request) -> int:
            if request.webhook_id in seen:
                return 200
            seen.add(request.webhook_id)
            return status

        self.answer = answer

    def events(self) -> list[dict]:
        """The verified bodies, in the order they came."""
        with self.lock:
            return [r.event for r in self.requests if r.event is not None]

    def unverified(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.event is None]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client may reuse its connection
            # The headers and the body are two writes: with Nagle's algorithm the second waits for the client's
            # delayed ACK (40 ms), which would time the receiver, not the delivery.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # its client died between the headers and the body (a killed worker)
                    self.close_connection = True
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                event, error = None, "no secret"
                if receiver.secret:
                    try:
                        event = Verifier(receiver.secret).verify(body, headers)
                        error = ""
                    except WebhookVerificationError as exc:
                        error = str(exc)
                request = Request(self.path, headers, body, event, error, self.client_address, 0, time.time())
                with receiver.lock:
                    answered = receiver.script.popleft() if receiver.script else None
                answered = answered if answered is not None else receiver.answer(request)
                request.answered = answered
                with receiver.lock:
                    receiver.requests.append(request)
                if answered == HANG:
                    receiver._stopping.wait()
                    return
                if answered == DRIP:
                    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                        if receiver._stopping.wait(1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    return
                reply = json.dumps({"ok": answered < 300}).encode()
                self.send_response(answered)
                if 300 <= answered < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass  # test equipment: its access log is noise in a failure report

        return Handler
