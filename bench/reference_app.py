"""The floor for scenario 3: a WSGI app that does a fixed amount of Python work per request and nothing
else (no database, no Redis), served by gunicorn like mailservice (gthread, a process per core, 8
threads). Whatever p99 it shows at 200 requests/s is the machine's and gunicorn's, not ours.

The work is counted in loop iterations, calibrated once to REFERENCE_MS milliseconds at start: a
slower spell of the VM slows it as it slows real code (a busy wait on the clock would not)."""

import json
import os
import time

REFERENCE_MS = float(os.environ.get("REFERENCE_MS", "1.5"))


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _calibrate() -> int:
    n = 10_000
    best = min(_timed(n) for _ in range(20))
    return max(1, int(n * REFERENCE_MS / 1000 / best))


def _timed(n: int) -> float:
    started = time.perf_counter()
    _work(n)
    return time.perf_counter() - started


ITERATIONS = _calibrate()


def application(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    json.loads(environ["wsgi.input"].read(size) or b"{}")
    _work(ITERATIONS)
    body = b'{"status": "PENDING"}'
    start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
