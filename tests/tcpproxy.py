"""A TCP proxy for failure tests: pass traffic, blackhole it (a partition), reset it, heal it.

The proxy runs its own event loop in a daemon thread, so sync and async tests
drive it alike; every control method blocks until the proxy applied it.
``blackhole()`` keeps every socket open and silently drops bytes both ways (no
FIN, no RST reaches either side). ``heal()`` resumes forwarding; connections
whose bytes were dropped are reset then, since their streams are corrupt.
Note: the proxy's kernel still ACKs, so only application-level timeouts (a
liveness query, a heartbeat) can notice a blackhole, not TCP keepalives; the
upstream server's keepalives are emulated by ``blackhole(upstream_timeout=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")
_CHUNK = 65536


@dataclass(eq=False)  # identity semantics: links live in a set
class _Link:
    """One proxied connection: the client side, the server side, and its forwarding tasks."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    damaged: bool = False  # bytes or a FIN were dropped: the stream cannot be resumed

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.server) if w is not None]


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a dropped NAT entry would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``; see the module docstring for the modes."""

    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen_port = listen_port
        self.mode = "pass"
        self.bytes_forwarded = 0
        self.bytes_dropped = 0
        self.accepted = 0
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.upstream_expired = 0
        self.port = 0

    # -- control, from any thread ---------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self.port = self._call(self._start())
        return self

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url_for(self, url: str) -> str:
        """``url`` with its ``host:port`` replaced by the proxy's (for DSNs and Redis URLs)."""
        host, port = self.upstream
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    @property
    def connections(self) -> int:
        return len(self._links)

    @property
    def damaged(self) -> int:
        """Open connections that lost bytes or a FIN (reset at the next heal)."""
        return sum(1 for link in list(self._links) if link.damaged)

    def blackhole(self, upstream_timeout: float | None = None) -> None:
        """Partition: forward nothing, drop everything, keep every socket open.

        ``upstream_timeout``: in a real partition the server's own TCP keepalives
        (or TCP_USER_TIMEOUT) give up after a while and it drops the connection,
        which a userspace proxy hides; after this many seconds the proxy resets
        the upstream side of every link, as the server's kernel would have. The
        client side stays silent.
        """
        self._call(self._set_mode("blackhole", upstream_timeout))

    def heal(self) -> None:
        """End a partition: forward again; connections that lost bytes are reset."""
        self._call(self._set_mode("pass"))

    def reset(self) -> None:
        """RST every current connection, both sides; new connections are accepted."""
        self._call(self._reset_all())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- the proxy's own loop -----------------------------------------------------------

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _set_mode(self, mode: str, upstream_timeout: float | None = None) -> None:
        self.mode = mode
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if upstream_timeout is not None:
            self._expiry = self._loop.call_later(upstream_timeout, self._expire_upstream)
        if mode == "pass":
            for link in [link for link in self._links if link.damaged]:
                self._drop(link)

    def _expire_upstream(self) -> None:
        self._expiry = None
        for link in list(self._links):
            link.damaged = True
            if link.server is not None:
                _abort(link.server)
        self.upstream_expired += 1

    async def _reset_all(self) -> None:
        for link in list(self._links):
            self._drop(link)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._drop(link)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _drop(self, link: _Link) -> None:
        """RST both sides; the pumps then see EOF and end on their own."""
        self._links.discard(link)
        for writer in link.writers():
            _abort(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._tasks.add(me)
        self.accepted += 1
        link = _Link(client=writer)
        self._links.add(link)
        try:
            await self._serve(link, reader)
        finally:
            self._tasks.discard(me)
            if link in self._links:
                self._links.discard(link)
                for side in link.writers():
                    if link.damaged:
                        _abort(side)
                    else:
                        side.close()

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        if self.mode == "blackhole":
            # A partitioned SYN would never arrive; the nearest thing is a silent peer.
            link.damaged = True
            await self._pump(link, reader, None)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            link.damaged = True
            return
        link.server = up_writer
        back = asyncio.ensure_future(self._pump(link, up_reader, link.client))
        self._tasks.add(back)
        try:
            await self._pump(link, reader, up_writer)
            await back
        finally:
            back.cancel()
            await asyncio.wait([back])
            self._tasks.discard(back)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, dest: asyncio.StreamWriter | None
    ) -> None:
        """Copy ``reader`` to ``dest`` while passing; drop (and mark damage) while not."""
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(_CHUNK)
                if self.mode != "pass" or dest is None or link.damaged:
                    link.damaged = True
                    self.bytes_dropped += len(data)
                    if not data:
                        return  # EOF swallowed: the other side must not see a FIN
                    continue
                if not data:
                    if dest.can_write_eof():
                        dest.write_eof()
                    return
                # Counted before the write: write() may send at once, and a test that
                # has read every byte must then see them all counted.
                self.bytes_forwarded += len(data)
                dest.write(data)
                await dest.drain()
