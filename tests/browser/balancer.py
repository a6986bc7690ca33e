"""A round-robin TCP load balancer for client tests: what the page or client sees as "the
gateway URL", spreading connections over several real gateway processes.

Like a production L4 balancer, it picks the next backend per connection and skips one
that refuses the connection; when a backend dies, its connections are cut and the
clients' own reconnect logic finds a live one. Runs in a daemon thread, so sync and
async tests drive it alike; ``by_backend()`` tells which gateway holds which clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter

_CHUNK = 65536


class Balancer:
    """Listens on ``127.0.0.1:<port>`` and forwards each connection to the next live backend."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self._next = itertools.cycle(range(len(backends)))
        self._links: dict[asyncio.Task[None], int] = {}
        self._writers: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def by_backend(self) -> Counter[int]:
        """Open client connections per backend port."""
        return Counter(self._links.values())

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Cut every link; each handler then returns by itself (a cancelled handler task
        # would be logged by asyncio's stream machinery).
        for writers in list(self._writers.values()):
            for writer in writers:
                writer.transport.abort()
        if self._links:
            await asyncio.wait(list(self._links), timeout=5)

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[next(self._next)]
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                return port, reader, writer
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        upstream = await self._connect()
        if upstream is None:  # every backend down: the client sees a reset and retries
            writer.transport.abort()
            return
        port, up_reader, up_writer = upstream
        self._links[task] = port
        self._writers[task] = [writer, up_writer]
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer)),
            asyncio.ensure_future(_pump(up_reader, writer)),
        ]
        try:
            # Either side ending ends the link (no half-close games: WebSocket and HTTP).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            del self._links[task]
            del self._writers[task]
            for side in (writer, up_writer):
                side.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error on either side; then the link is torn down."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
