"""A fake ESP for the bench: Postmark's send API (POST /email, /email/batch) on loopback, HTTP/1.1 keep-alive,
answering each request after a fixed latency with Postmark's success shape. Writes `<id> <unix time>` per message
sent, the id read from its X-Mailservice-Id or X-Bench-Id header (Postmark's JSON "Headers"), as bench/sink.py does.

python -m bench.fake_esp PORT LATENCY_SECONDS OUTFILE   (stops on SIGTERM, flushing OUTFILE)

asyncio, so that one connection's wait holds up no other: the delivery measured sends over many connections at
once, and the fake shares the machine's cores with it."""

import asyncio
import json
import socket
import sys
import time
import uuid
from datetime import UTC, datetime

from bench.loopback import serve_until_sigterm

ID_HEADERS = ("x-mailservice-id", "x-bench-id")
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity"}


def answer(status: int, body: object) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def email_id(message: dict) -> str:
    for header in message.get("Headers") or ():
        if str(header.get("Name", "")).lower() in ID_HEADERS:
            return str(header.get("Value", "-"))
    return "-"


def accepted(message: dict) -> dict:
    return {
        "To": message.get("To", ""),
        "SubmittedAt": datetime.now(UTC).isoformat(),
        "MessageID": str(uuid.uuid4()),
        "ErrorCode": 0,
        "Message": "OK",
    }


async def read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")  # the empty trailer
        return b"".join(chunk[:-2] for chunk in chunks)
    length = int(headers.get(b"content-length", b"0"))
    return await reader.readexactly(length) if length else b""


async def serve(port: int, latency: float, out: str) -> None:
    lines: list[str] = []

    async def respond(path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        if path not in (b"/email", b"/email/batch"):
            return answer(404, {"ErrorCode": 404, "Message": "Not found"})
        if not headers.get(b"x-postmark-server-token"):
            return answer(401, {"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied."})
        try:
            sent = json.loads(body)
        except ValueError:
            return answer(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
        messages = sent if path == b"/email/batch" else [sent]
        if latency:
            await asyncio.sleep(latency)
        now = f"{time.time():.6f}\n"
        lines.extend(f"{email_id(message)} {now}" for message in messages)
        results = [accepted(message) for message in messages]
        return answer(200, results if path == b"/email/batch" else results[0])

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request_line, *header_lines = (await reader.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await read_body(reader, headers)
                method, path, *_ = request_line.split(b" ")
                path = path.split(b"?")[0].rstrip(b"/")
                writer.write(await respond(path, headers, body) if method == b"POST" else answer(404, {}))
                if headers.get(b"connection", b"").lower() == b"close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    await serve_until_sigterm(connection, port, backlog=512, lines=lines, out=out)


def main() -> None:
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))


if __name__ == "__main__":
    main()
