"""HTTP load from its own process: a lean asyncio HTTP/1.1 client over keep-alive connections (requests
are encoded once; a general client such as aiohttp spends ~1.5 ms of CPU per request, on the same two
cores as the server it measures). Prints JSON.

python -m bench.load URL KEY single CONCURRENCY SECONDS      -> requests/s, p50, p99 (ms)
python -m bench.load URL KEY rate RATE SECONDS               -> p50, p99 at a fixed arrival rate (open loop)
python -m bench.load URL KEY batch CONCURRENCY REQUESTS SIZE -> emails/s
python -m bench.load URL KEY postmark CONCURRENCY REQUESTS SIZE -> emails/s, as batch, to POST /email/batch"""

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

EMAIL = {"from": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Your order",
         "text": "Thank you for your order."}  # fmt: skip
# The fields a Postmark client commonly sends (design.md, "Doors in"): more than EMAIL has, so row 8 is not row 4's
# work through another door.
POSTMARK_EMAIL = {"From": "Shop <shop@example.com>", "To": "alice@example.org", "Subject": "Your order",
                  "TextBody": "Thank you for your order.", "HtmlBody": "<p>Thank you for your order.</p>",
                  "Tag": "orders", "Metadata": {"order": "42"}}  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else 0.0


class Client:
    """POSTs one prepared request; keeps idle connections for the next one (opens more when all are busy)."""

    def __init__(self, url: str, key: str, path: str, body: dict | list, *, headers: str = "", ok: int = 202) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.ok = ok
        payload = json.dumps(body).encode()
        headers = headers or f"Authorization: Bearer {key}\r\n"
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.latencies: list[float] = []
        self.failures: list[int] = []

    async def post(self) -> None:
        started = time.perf_counter()
        while True:
            reused = bool(self.idle)
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            writer.write(self.request)
            try:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionResetError):
                writer.close()
                if not reused:
                    raise
                # The server closed it while idle (keep-alive timeout) before reading: send on a new one.
        status = int(head[0].split()[1])
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        await reader.readexactly(int(headers["content-length"]))
        self.latencies.append(time.perf_counter() - started)
        if status != self.ok:
            self.failures.append(status)
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))


async def single(url, key, concurrency, seconds):
    client = Client(url, key, "/api/v1/emails", EMAIL)
    deadline = time.perf_counter() + seconds

    async def user():
        while time.perf_counter() < deadline:
            await client.post()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests_per_second": len(client.latencies) / elapsed, "p50_ms": percentile(client.latencies, 0.5),
            "p99_ms": percentile(client.latencies, 0.99), "failures": len(client.failures),
            "requests": len(client.latencies)}  # fmt: skip


async def rate(url, key, per_second, seconds):
    client = Client(url, key, "/api/v1/emails", EMAIL)
    tasks = []
    started = time.perf_counter()
    for n in range(int(per_second * seconds)):
        # Open loop: each request starts on schedule, whether or not earlier ones have been answered.
        await asyncio.sleep(max(0.0, started + n / per_second - time.perf_counter()))
        tasks.append(asyncio.create_task(client.post()))
    await asyncio.gather(*tasks)
    return {"rate": per_second, "p50_ms": percentile(client.latencies, 0.5), "p99_ms": percentile(client.latencies, 0.99),
            "failures": len(client.failures), "requests": len(client.latencies)}  # fmt: skip


async def batch(url, key, concurrency, requests, size, postmark=False):
    if postmark:
        headers = f"X-Postmark-Server-Token: {key}\r\nAccept: application/json\r\n"
        client = Client(url, key, "/email/batch", [POSTMARK_EMAIL] * size, headers=headers, ok=200)
    else:
        client = Client(url, key, "/api/v1/emails/batch", {"emails": [EMAIL] * size})
    queue = list(range(requests))

    async def user():
        while queue:
            queue.pop()
            await client.post()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"emails_per_second": requests * size / elapsed, "seconds": elapsed, "failures": len(client.failures),
            "statuses": sorted(set(client.failures)), "requests": requests,
            "p50_ms": percentile(client.latencies, 0.5)}  # fmt: skip


def main() -> None:
    url, key, mode, *args = sys.argv[1:]
    numbers = [float(a) for a in args]
    if mode == "single":
        result = asyncio.run(single(url, key, int(numbers[0]), numbers[1]))
    elif mode == "rate":
        result = asyncio.run(rate(url, key, numbers[0], numbers[1]))
    else:
        postmark = mode == "postmark"
        result = asyncio.run(batch(url, key, int(numbers[0]), int(numbers[1]), int(numbers[2]), postmark))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
