"""SMTP load from processes of its own: CLIENTS smtplib clients, each on one connection of its own (AUTH PLAIN
with KEY, "-" for none), sending one prepared message over and over for SECONDS. Counts only 250 answers to
DATA and keeps the email ids they name. Prints JSON.

python -m bench.smtp_load send PORT KEY CLIENTS SECONDS   -> messages/s, replies by code, ids
python -m bench.smtp_load sink PORT                       -> a bare aiosmtpd server: 250 at once (the ceiling)

The clients are processes, not threads: smtplib's own CPU per message is about what a bare server's is, and
clients sharing one interpreter's lock would be the ceiling instead of the server."""

import asyncio
import json
import multiprocessing
import re
import signal
import smtplib
import sys
import time
import warnings
from collections import Counter
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

SENDER = "shop@example.com"
RECIPIENT = "alice@example.org"
ACCEPTED = re.compile(rb"Accepted as email ([0-9a-f-]{36})")


def message() -> bytes:
    """The email of bench/load.py's EMAIL, as a mail client would send it."""
    email = EmailMessage()
    email["From"] = f"Shop <{SENDER}>"
    email["To"] = RECIPIENT
    email["Subject"] = "Your order"
    email.set_content("Thank you for your order.")
    return email.as_bytes(policy=SMTP_POLICY)


def client(port: int, key: str, seconds: float, ready, results) -> None:
    body = message()
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
    smtp.ehlo("bench.example")
    if key != "-":
        smtp.user, smtp.password = "bench", key
        smtp.auth("PLAIN", smtp.auth_plain)
    ready.wait()  # connected and authenticated: every client starts sending together
    started = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
    deadline = started + seconds
    replies, ids, latencies = Counter(), [], []
    while time.monotonic() < deadline:
        sent = time.perf_counter()
        code, _ = smtp.mail(SENDER)
        if code == 250:
            code, _ = smtp.rcpt(RECIPIENT)
        if code == 250:
            code, text = smtp.data(body)
            if code == 250 and (found := ACCEPTED.search(text)):
                ids.append(found.group(1).decode())
        else:
            smtp.rset()
        replies[code] += 1
        latencies.append(time.perf_counter() - sent)
    ended = time.monotonic()
    smtp.quit()
    results.put({"started": started, "ended": ended, "replies": replies, "ids": ids, "latencies": latencies})


def send(port: int, key: str, clients: int, seconds: float) -> dict:
    context = multiprocessing.get_context("fork")
    ready, results = context.Barrier(clients), context.Queue()
    processes = [context.Process(target=client, args=(port, key, seconds, ready, results)) for _ in range(clients)]
    for process in processes:
        process.start()
    runs = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    replies = sum((run["replies"] for run in runs), Counter())
    elapsed = max(run["ended"] for run in runs) - min(run["started"] for run in runs)
    latencies = sorted(latency for run in runs for latency in run["latencies"])

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else 0.0

    return {"messages_per_second": replies[250] / elapsed, "accepted": replies[250], "seconds": elapsed,
            "replies": {str(code): count for code, count in sorted(replies.items())}, "clients": clients,
            "p50_ms": percentile(0.5), "p99_ms": percentile(0.99),
            "ids": [email_id for run in runs for email_id in run["ids"]]}  # fmt: skip


class Bare:
    """aiosmtpd's handler hooks, doing nothing: any AUTH PLAIN succeeds, every message gets 250 at once."""

    def __init__(self) -> None:
        self.received = 0

    async def auth_PLAIN(self, server, args):
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=True, auth_data=args)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received += 1
        return "250 OK"


async def sink(port: int) -> None:
    """As `manage.py smtpd` serves (its options, its loop), with the bare handler; on SIGTERM prints how many
    messages it received."""
    from aiosmtpd.smtp import SMTP

    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    loop = asyncio.get_running_loop()
    handler = Bare()
    options = {"hostname": "bench.example", "data_size_limit": 10 * 1024 * 1024, "enable_SMTPUTF8": True,
               "auth_required": True, "auth_require_tls": False}  # fmt: skip
    server = await loop.create_server(lambda: SMTP(handler, **options), host="127.0.0.1", port=port)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    server.close()
    print(json.dumps({"received": handler.received}), flush=True)


def main() -> None:
    mode, port, *args = sys.argv[1:]
    if mode == "sink":
        asyncio.run(sink(int(port)))
    else:
        key, clients, seconds = args
        print(json.dumps(send(int(port), key, int(clients), float(seconds))))


if __name__ == "__main__":
    main()
