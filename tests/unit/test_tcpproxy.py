"""The failure-test TCP proxy against an echo server: pass, blackhole, heal, reset."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.tcpproxy import TcpProxy

SILENCE = 0.3  # how long "nothing arrives" is watched for; a bound, not a sleep


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte; records how each connection ended (eof, reset)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.received = 0
        self.endings: list[str] = []
        super().__init__(("127.0.0.1", 0), _EchoHandler)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


class _EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.server.received += len(data)
                self.request.sendall(data)
            self.server.endings.append("eof")
        except ConnectionResetError:
            self.server.endings.append("reset")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)  # poll interval of a wait bounded by `timeout`


def stays(condition: Callable[[], bool], period: float = SILENCE) -> None:
    """``condition`` holds for the whole period (an absence can only be watched for a while)."""
    deadline = time.monotonic() + period
    while time.monotonic() < deadline:
        assert condition()
        time.sleep(0.01)  # sampling interval over the watched period


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("closed early")
        chunks += chunk
    return bytes(chunks)


def assert_silent(sock: socket.socket) -> None:
    """Nothing at all arrives: no data, no FIN (b""), no RST."""
    sock.settimeout(SILENCE)
    with pytest.raises(TimeoutError):
        sock.recv(1)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", echo.port) as running:
        yield running


def connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=5)
    return sock


def test_pass_forwards_both_ways_intact(proxy: TcpProxy) -> None:
    """In pass mode a megabyte goes through and comes back byte for byte."""
    payload = bytes(range(256)) * 4096
    with connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert recv_exactly(sock, len(payload)) == payload
        sender.join(5)
    assert proxy.bytes_forwarded >= 2 * len(payload)


def test_url_for_points_a_dsn_at_the_proxy(proxy: TcpProxy, echo: EchoServer) -> None:
    """DSNs and Redis URLs are rewritten to go through the proxy."""
    url = f"postgresql://postgres@127.0.0.1:{echo.port}/db?sslmode=disable"
    assert proxy.url_for(url) == f"postgresql://postgres@127.0.0.1:{proxy.port}/db?sslmode=disable"


def test_blackhole_drops_silently_and_keeps_sockets_open(proxy: TcpProxy, echo: EchoServer) -> None:
    """A blackholed connection neither answers nor closes, and the server receives nothing."""
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
        proxy.blackhole()
        sock.sendall(b"lost")
        wait_for(lambda: proxy.bytes_dropped >= 4)
        assert_silent(sock)
        assert echo.received == 5
        assert proxy.connections == 1


def test_blackhole_swallows_a_close(proxy: TcpProxy, echo: EchoServer) -> None:
    """A client that closes during a partition: the server never hears of it until heal."""
    sock = connect(proxy)
    sock.sendall(b"x")
    recv_exactly(sock, 1)
    proxy.blackhole()
    sock.close()
    wait_for(lambda: proxy.damaged == 1)
    stays(lambda: echo.endings == [])
    proxy.heal()
    wait_for(lambda: echo.endings == ["reset"])


def test_heal_resets_damaged_links_and_keeps_idle_ones(proxy: TcpProxy) -> None:
    """After heal, a connection that lost bytes is reset; an idle one works on."""
    with connect(proxy) as idle, connect(proxy) as busy:
        for sock in (idle, busy):
            sock.sendall(b"a")
            recv_exactly(sock, 1)
        proxy.blackhole()
        busy.sendall(b"dropped")
        wait_for(lambda: proxy.bytes_dropped >= 7)
        proxy.heal()
        busy.settimeout(5)
        with pytest.raises(ConnectionResetError):
            busy.recv(1)
        idle.sendall(b"still here")
        assert recv_exactly(idle, 10) == b"still here"


def test_upstream_timeout_emulates_the_servers_keepalive(proxy: TcpProxy, echo: EchoServer) -> None:
    """blackhole(upstream_timeout=t): the server side is reset after t, the client hears nothing."""
    with connect(proxy) as sock:
        sock.sendall(b"a")
        recv_exactly(sock, 1)
        started = time.monotonic()
        proxy.blackhole(upstream_timeout=0.2)
        wait_for(lambda: echo.endings == ["reset"])
        assert time.monotonic() - started >= 0.2
        assert_silent(sock)
        assert proxy.upstream_expired == 1
        proxy.heal()
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_connections_accepted_during_blackhole_hear_nothing(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    """A connect during a partition succeeds at the proxy but reaches nothing; heal resets it."""
    proxy.blackhole()
    with connect(proxy) as sock:
        sock.sendall(b"syn?")
        assert_silent(sock)
        assert echo.received == 0
        wait_for(lambda: proxy.damaged == 1)  # accepted while blackholed, not after
        proxy.heal()
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    with connect(proxy) as fresh:
        fresh.sendall(b"ok")
        assert recv_exactly(fresh, 2) == b"ok"


def test_reset_sends_rst_to_both_sides(proxy: TcpProxy, echo: EchoServer) -> None:
    """reset() aborts every connection with an RST; new connections work right after."""
    with connect(proxy) as sock:
        sock.sendall(b"1")
        recv_exactly(sock, 1)
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
        wait_for(lambda: echo.endings == ["reset"])
    with connect(proxy) as sock:
        sock.sendall(b"2")
        assert recv_exactly(sock, 1) == b"2"


def test_half_close_is_forwarded_in_pass_mode(proxy: TcpProxy, echo: EchoServer) -> None:
    """A client's FIN reaches the server, which finishes cleanly (eof, not reset)."""
    with connect(proxy) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 3) == b"bye"
        wait_for(lambda: echo.endings == ["eof"])
        assert sock.recv(1) == b""
    wait_for(lambda: proxy.connections == 0)


def test_unreachable_upstream_closes_the_client() -> None:
    """With nothing behind the proxy, the client's connection ends instead of hanging."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    # The RST may even beat connect()'s own return: either way it is a reset, not a hang.
    with (
        TcpProxy("127.0.0.1", dead_port) as proxy,
        pytest.raises(ConnectionResetError),
        connect(proxy) as sock,
    ):
        sock.recv(1)


async def test_usable_from_async_code(proxy: TcpProxy) -> None:
    """An asyncio client through the proxy: pass works, a blackhole is a read timeout."""
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        proxy.blackhole()
        writer.write(b"ping")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), SILENCE)
    finally:
        writer.close()
        proxy.heal()


def test_stop_closes_everything(echo: EchoServer) -> None:
    """stop() ends the proxy's thread and every connection through it."""
    proxy = TcpProxy("127.0.0.1", echo.port).start()
    sock = connect(proxy)
    sock.sendall(b"z")
    recv_exactly(sock, 1)
    proxy.stop()
    with sock, pytest.raises(ConnectionResetError):
        sock.recv(1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=1).close()
