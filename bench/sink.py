"""An aiosmtpd sink with a fixed latency per message; writes `<id> <unix time>` per accepted message.

python -m bench.sink PORT LATENCY_SECONDS OUTFILE   (stops on SIGTERM, flushing OUTFILE)"""

import asyncio
import signal
import sys
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.lines: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        if self.latency:
            await asyncio.sleep(self.latency)
        email_id = "-"
        for line in envelope.content.split(b"\r\n"):
            if not line:
                break
            name, _, value = line.partition(b":")
            if name.lower() in (b"x-mailservice-id", b"x-bench-id"):
                email_id = value.strip().decode()
        self.lines.append(f"{email_id} {time.time():.6f}\n")
        return "250 OK"


def main() -> None:
    port, latency, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    handler = Handler(latency)
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()

    def stop(*_):
        controller.stop()
        with open(out, "w") as f:
            f.writelines(handler.lines)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.pause()


if __name__ == "__main__":
    main()
