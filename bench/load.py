"""HTTP load from its own process (aiohttp). Prints JSON.

python -m bench.load URL KEY single CONCURRENCY SECONDS      -> requests/s, p50, p99 (ms)
python -m bench.load URL KEY rate RATE SECONDS               -> p50, p99 at a fixed arrival rate
python -m bench.load URL KEY batch CONCURRENCY REQUESTS SIZE -> emails/s"""

import asyncio
import json
import sys
import time

import aiohttp

EMAIL = {"from": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Your order",
         "text": "Thank you for your order."}  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else 0.0


async def post(session, url, body, latencies, failures):
    started = time.perf_counter()
    async with session.post(url, json=body) as response:
        await response.read()
        if response.status != 202:
            failures.append(response.status)
    latencies.append(time.perf_counter() - started)


async def single(url, key, concurrency, seconds):
    latencies, failures = [], []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:

        async def client():
            while time.perf_counter() < deadline:
                await post(session, f"{url}/api/v1/emails", EMAIL, latencies, failures)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests_per_second": len(latencies) / elapsed, "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99), "failures": len(failures), "requests": len(latencies)}  # fmt: skip


async def rate(url, key, per_second, seconds):
    latencies, failures, tasks = [], [], []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        started = time.perf_counter()
        for n in range(int(per_second * seconds)):
            await asyncio.sleep(max(0.0, started + n / per_second - time.perf_counter()))
            tasks.append(asyncio.create_task(post(session, f"{url}/api/v1/emails", EMAIL, latencies, failures)))
        await asyncio.gather(*tasks)
    return {"rate": per_second, "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "failures": len(failures), "requests": len(latencies)}  # fmt: skip


async def batch(url, key, concurrency, requests, size):
    latencies, failures = [], []
    body = {"emails": [EMAIL] * size}
    queue = list(range(requests))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:

        async def client():
            while queue:
                queue.pop()
                await post(session, f"{url}/api/v1/emails/batch", body, latencies, failures)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"emails_per_second": requests * size / elapsed, "seconds": elapsed, "failures": len(failures),
            "p50_ms": percentile(latencies, 0.5)}  # fmt: skip


def main() -> None:
    url, key, mode, *args = sys.argv[1:]
    numbers = [float(a) for a in args]
    if mode == "single":
        result = asyncio.run(single(url, key, int(numbers[0]), numbers[1]))
    elif mode == "rate":
        result = asyncio.run(rate(url, key, numbers[0], numbers[1]))
    else:
        result = asyncio.run(batch(url, key, int(numbers[0]), int(numbers[1]), int(numbers[2])))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
