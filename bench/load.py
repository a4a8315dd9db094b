"""HTTP load from its own process: a lean asyncio HTTP/1.1 client over keep-alive connections (requests
are encoded once; a general client such as aiohttp spends ~1.5 ms of CPU per request, on the same two
cores as the server it measures). Prints JSON.

python -m bench.load URL KEY single CONCURRENCY SECONDS      -> requests/s, p50, p99 (ms)
python -m bench.load URL KEY rate RATE SECONDS               -> p50, p99 at a fixed arrival rate (open loop)
python -m bench.load URL KEY batch CONCURRENCY REQUESTS SIZE [rich] -> emails/s (rich: each email RICH_EMAIL)
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
# Row 12's email: an order confirmation of a common size (a subject, ~2 kB of text, ~4 kB of html, metadata), so
# that encrypting its content costs what a real email's does; EMAIL's few words would hide that cost.
_ITEMS = [("Organic cotton T-shirt, size M, navy", 19.90), ("Merino wool socks, pair, grey", 12.50),
          ("Canvas tote bag, natural", 14.00), ("Linen shirt, size L, white", 49.00),
          ("Recycled denim jeans, 32/32, indigo", 79.00), ("Leather belt, 90 cm, brown", 35.00),
          ("Rain jacket, size M, olive", 119.00), ("Knitted beanie, charcoal", 18.00),
          ("Cotton chinos, 32/34, sand", 59.00), ("Wool scarf, 180 cm, burgundy", 39.00),
          ("Running shorts, size M, black", 29.00), ("Hooded sweatshirt, size L, heather grey", 54.00)]  # fmt: skip
_TOTAL = f"{sum(price for _, price in _ITEMS):.2f} EUR"
_PARAGRAPHS = [
    "Delivery address: Alice Example, 12 Harbour Street, Flat 3, 1012 AB Amsterdam, Netherlands.",
    "Your parcel leaves our warehouse within two working days. As soon as the carrier has collected it, you will "
    "receive a second email with its tracking link; most parcels arrive one to three working days later. If nobody "
    "is home, the carrier leaves a card and tries again the next working day.",
    "You may return any item within 30 days of delivery, unworn and with its labels, free of charge: print the "
    "return label from your account page, or reply to this email and we will send you one. We refund the price "
    "to the card you paid with within five working days of receiving the return.",
    "Your invoice is attached to your account page under Orders, where you can also change the delivery address "
    "until the parcel leaves the warehouse, or cancel the items that have not left yet.",
    "We plant a tree for every order over 100 EUR, with a local partner in the Veluwe; this order planted one. "
    "You can follow its planting, and the others of your orders, on the Trees tab of your account page.",
    "Questions? Reply to this email or call us on +31 20 123 4567, Monday to Friday, 9:00 to 17:00.",
]
RICH_TEXT = "\n\n".join([
    "Hello Alice,", "Thank you for your order A-10042, placed today. Here is what you ordered:",
    "\n".join(f"{n}. {name}: 1 x {price:.2f} EUR" for n, (name, price) in enumerate(_ITEMS, 1)),
    f"Total, VAT and delivery included: {_TOTAL}", *_PARAGRAPHS, "Kind regards,\nThe Shop team",
])  # fmt: skip
_CELL = 'style="padding:4px 8px'
RICH_HTML = (
    '<!doctype html><html><body style="font-family:Helvetica,Arial,sans-serif;color:#222;max-width:600px">'
    '<h1 style="font-size:20px">Thank you for your order A-10042</h1><p>Hello Alice,</p>'
    '<p>Here is what you ordered:</p><table style="border-collapse:collapse;width:100%">'
    + "".join(f'<tr><td {_CELL}">{name}</td><td {_CELL};text-align:right">1</td>'
              f'<td {_CELL};text-align:right">{price:.2f} EUR</td></tr>' for name, price in _ITEMS)
    + f'<tr><td colspan="2" {_CELL}"><strong>Total</strong></td><td {_CELL};text-align:right"><strong>{_TOTAL}'
    "</strong></td></tr></table>" + "".join(f"<p>{p}</p>" for p in _PARAGRAPHS)
    + "<p>Kind regards,<br>The Shop team</p></body></html>"
)  # fmt: skip
RICH_EMAIL = {"from": "Shop <shop@example.com>", "to": ["alice@example.org"],
              "subject": "Your order A-10042 is confirmed", "text": RICH_TEXT, "html": RICH_HTML,
              "metadata": {"order": "A-10042"}}  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else 0.0


class Client:
    """POSTs one prepared request; keeps idle connections for the next one (opens more when all are busy), or with
    keep_alive=False, sends each request on a connection of its own."""

    def __init__(
        self, url: str, key: str, path: str, body: dict | list, *, headers: str = "", ok: int = 202, keep_alive=True
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.ok = ok
        payload = json.dumps(body).encode()
        headers = (headers or f"Authorization: Bearer {key}\r\n") + ("" if keep_alive else "Connection: close\r\n")
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


async def batch(url, key, concurrency, requests, size, postmark=False, email=EMAIL):
    # A connection per request: the server's processes each accept their share of them. Kept alive, the few
    # connections would land on its processes by lot, and all of them on one process halves what it can take.
    if postmark:
        headers = f"X-Postmark-Server-Token: {key}\r\nAccept: application/json\r\n"
        client = Client(url, key, "/email/batch", [POSTMARK_EMAIL] * size, headers=headers, ok=200, keep_alive=False)
    else:
        client = Client(url, key, "/api/v1/emails/batch", {"emails": [email] * size}, keep_alive=False)
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
    rich = args[-1:] == ["rich"]
    numbers = [float(a) for a in args[: len(args) - rich]]
    if mode == "single":
        result = asyncio.run(single(url, key, int(numbers[0]), numbers[1]))
    elif mode == "rate":
        result = asyncio.run(rate(url, key, numbers[0], numbers[1]))
    else:
        postmark = mode == "postmark"
        email = RICH_EMAIL if rich else EMAIL
        result = asyncio.run(batch(url, key, int(numbers[0]), int(numbers[1]), int(numbers[2]), postmark, email))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
