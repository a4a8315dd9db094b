"""Stream load from its own process: COUNT valid entries (each its own email, no idempotency_key) XADDed to STREAM
in pipelined chunks, then every result read back from <STREAM>:results. Prints JSON.

python -m bench.stream_load REDIS_URL STREAM KEY COUNT   -> entries/s from the first XADD to the last result

A consume_stream process must be reading STREAM on REDIS_URL. Results are counted per entry (a second result
for one entry is counted, not dropped) and the email ids they name are printed, for the caller to count rows."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import redis

CHUNK = 500  # entries per pipelined round trip
RESULT_TIMEOUT = 300.0
# Results that arrive after the last expected one are still counted for this long: a duplicate shows up.
LINGER_SECONDS = 0.5


def stream_ingest(redis_url: str, stream: str, key: str, count: int) -> dict:
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    results = f"{stream}:results"
    # Read from here on (XREAD, not XLEN: the results stream is trimmed at MAIL_STREAM_RESULTS_MAXLEN).
    last = client.xinfo_stream(results)["last-generated-id"] if client.exists(results) else b"0-0"
    body = {"from": "Bench <bench@example.com>", "subject": "Stream ingest", "text": "Hello from the stream bench."}
    entries = [{"api_key": key, "email": json.dumps({**body, "to": [f"r{n}@example.org"]})} for n in range(count)]
    started = time.perf_counter()
    ids: set[bytes] = set()
    for start in range(0, count, CHUNK):
        with client.pipeline(transaction=False) as pipeline:
            for entry in entries[start : start + CHUNK]:
                pipeline.xadd(stream, entry)
            ids.update(pipeline.execute())
    added = time.perf_counter()
    answered: Counter[bytes] = Counter()
    email_ids: list[str] = []
    errors: list[str] = []
    ended = None
    deadline = time.monotonic() + RESULT_TIMEOUT
    while ended is None or time.perf_counter() < ended + LINGER_SECONDS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids - set(answered))} of {count} entries got no result in {RESULT_TIMEOUT:.0f} s")
        reply = client.xread({results: last}, count=10_000, block=100 if ended else 1000)
        for _, found in reply or []:
            for result_id, fields in found:
                last = result_id
                entry = fields.get(b"entry")
                if entry not in ids:
                    continue
                answered[entry] += 1
                if b"email_id" in fields:
                    email_ids.append(fields[b"email_id"].decode())
                else:
                    errors.append(fields.get(b"errors", b"?").decode()[:200])
        if ended is None and len(answered) == count:
            ended = time.perf_counter()
    seconds = ended - started
    return {
        "entries_per_second": count / seconds,
        "seconds": seconds,
        "add_seconds": added - started,
        "entries": count,
        "answered": len(answered),
        "duplicate_results": sum(answered.values()) - len(answered),
        "errors": len(errors),
        "first_errors": errors[:3],
        "email_ids": email_ids,
    }


def main() -> None:
    redis_url, stream, key, count = sys.argv[1:]
    print(json.dumps(stream_ingest(redis_url, stream, key, int(count))))


if __name__ == "__main__":
    main()
