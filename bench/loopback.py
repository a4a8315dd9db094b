"""What the bench's asyncio servers on loopback share (bench/webhook_receiver.py, bench/fake_esp.py)."""

import asyncio
import signal


async def serve_until_sigterm(connection, port: int, *, backlog: int, lines: list[str], out: str) -> None:
    """Serves `connection` on 127.0.0.1:`port` until SIGTERM, then writes `lines` (what it recorded) to `out`."""
    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=backlog)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    server.close()
    with open(out, "w") as f:
        f.writelines(lines)
