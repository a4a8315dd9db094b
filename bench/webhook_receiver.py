"""A webhook receiver for the bench: HTTP/1.1 keep-alive on loopback, 204 at once to every POST, no verification
(it would spend the two cores the delivery shares). Writes `<webhook-id> <unix time>` per request.

python -m bench.webhook_receiver PORT OUTFILE   (stops on SIGTERM, flushing OUTFILE)

asyncio and one write per answer: a threaded http.server spends about as much CPU per request as the
delivery it measures."""

import asyncio
import socket
import sys
import time

from bench.loopback import serve_until_sigterm

ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


async def serve(port: int, out: str) -> None:
    lines: list[str] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, "-"
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                lines.append(f"{webhook_id} {time.time():.6f}\n")
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    await serve_until_sigterm(connection, port, backlog=256, lines=lines, out=out)


def main() -> None:
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))


if __name__ == "__main__":
    main()
