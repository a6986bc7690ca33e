"""The native load generator (bench/native/loadgen.c) speaks the Python one's protocol exactly.

Three levels: crafted frames from a small TCP server in this test (frames split
across reads, 16- and 64-bit lengths, a duplicate, a gap, ping, close frames, a
refused upgrade, a resync) with exact counts, run through both load generators;
the real ceiling program; and a real pgcast gateway through ``python -m bench``.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import native
from bench import wsframes as wf
from bench.delivery import DeliverySpec, loadgen_kind
from bench.loadgen import LoadConfig, exec_native
from bench.systems import Proc, python_module
from tests.integration.bench_support import run_bench
from tests.servers import free_port

WAIT = 10.0


@pytest.fixture(scope="module")
def built() -> Path:
    program = native.binary()  # make check installs gcc when missing (install-bench-tools)
    assert program is not None, f"native load generator does not build: {native.last_error}"
    return program


def close_after_peer(conn: socket.socket) -> None:
    """Close once the client has read everything: half-close, then wait for its EOF (a
    plain close with bytes still unread by the peer may reset the connection)."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(WAIT)
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def recv_until(sock: socket.socket, marker: bytes, buf: bytearray) -> bytes:
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("client went away")
        buf += chunk
    head, _, rest = bytes(buf).partition(marker)
    buf[:] = rest
    return head


def recv_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One masked client frame: (opcode, unmasked payload)."""
    while True:
        if len(buf) >= 2:
            length, head = buf[1] & 0x7F, 2
            if length == 126 and len(buf) >= 4:
                length, head = struct.unpack("!H", buf[2:4])[0], 4
            assert buf[1] & 0x80, "client frames must be masked"
            if length < 126 and len(buf) >= head + 4 + length:
                mask, body = buf[head : head + 4], buf[head + 4 : head + 4 + length]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
                opcode = buf[0] & 0x0F
                del buf[: head + 4 + length]
                return opcode, payload
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("client went away")
        buf += chunk


def event(channel: str, seq: int, pad: int = 10) -> bytes:
    data = {"bseq": seq, "bts": time.time(), "pad": "x" * pad}
    body = {"type": "message", "channel": channel, "offset": str(seq), "data": data}
    return wf.server_frame(orjson.dumps(body))


class CraftedServer:
    """Three connections by index: 0 gets the tricky stream, 1 a clean one, 2 a 403."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.pongs: list[bytes] = []
        self.subscribes: list[dict[str, Any]] = []
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            handlers = []
            for _ in range(3):
                conn, _ = self.listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handlers.append(threading.Thread(target=self.serve, args=(conn,), daemon=True))
                handlers[-1].start()
            for handler in handlers:
                handler.join(WAIT)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.finished.set()

    def serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.serve_one(conn)
        except BaseException as exc:
            self.errors.append(exc)

    def serve_one(self, conn: socket.socket) -> None:
        buf = bytearray()
        request = recv_until(conn, b"\r\n\r\n", buf).decode()
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in request.split("\r\n")[1:])
        }
        assert headers["authorization"].startswith("Bearer ")
        sub = orjson.loads(base64.urlsafe_b64decode(headers["authorization"].split(".")[1] + "=="))
        index = int(sub["sub"])
        if index == 2:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            close_after_peer(conn)
            return
        accept = wf.accept_for(headers["sec-websocket-key"].encode()).decode()
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        opcode, payload = recv_frame(conn, buf)
        assert opcode == wf.OP_TEXT
        self.subscribes.append(orjson.loads(payload))
        channel = f"user:{index}"
        subscribed = orjson.dumps({"type": "subscribed", "channel": channel, "id": 1})
        conn.sendall(wf.server_frame(subscribed))
        if index == 0:
            self.tricky(conn, buf, channel)
        else:
            frames = [event(channel, s) for s in range(1, 7)]
            frames.insert(3, wf.server_frame(subscribed))  # a resync: counted, not fatal
            frames.append(wf.server_frame(struct.pack("!H", 1000), wf.OP_CLOSE))
            conn.sendall(b"".join(frames))
        close_after_peer(conn)

    def tricky(self, conn: socket.socket, buf: bytearray, channel: str) -> None:
        """seq 1..5 (3 twice, 6 never): 7-bit, 16-bit, 64-bit lengths, cut mid-header."""
        small, mid, big = event(channel, 1), event(channel, 2, 300), event(channel, 3, 70_000)
        assert mid[1] == 126
        assert big[1] == 127
        dup, four, five = event(channel, 3), event(channel, 4), event(channel, 5)
        ping = wf.server_frame(b"are you there", wf.OP_PING)
        close = wf.server_frame(struct.pack("!H", 4001) + b"bye", wf.OP_CLOSE)
        pieces = [
            small[:1],  # the first header byte alone
            small[1:20],
            small[20:] + mid[:3],  # inside the 16-bit length
            mid[3:] + big[:6],  # inside the 64-bit length
            big[6:40_000],
            big[40_000:] + dup + four[: len(four) // 2],  # mid-payload
            four[len(four) // 2 :] + ping,
        ]
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.03)  # pacing: each piece reaches the parser in a read of its own
        opcode, payload = recv_frame(conn, buf)
        assert opcode == wf.OP_PONG
        self.pongs.append(payload)
        conn.sendall(five + close)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def crafted() -> Iterator[CraftedServer]:
    server = CraftedServer()
    yield server
    server.close()


def start_loadgen(config: dict[str, Any]) -> Proc:
    return Proc(python_module("bench.loadgen", orjson.dumps(config).decode()))


def wait_deliveries(gen: Proc, want: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        stats = gen.command({"cmd": "stats"}, WAIT)
        if stats["deliveries"] >= want or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)  # poll interval of a wait bounded by WAIT


@pytest.mark.parametrize("kind", ["native", "python"])
def test_crafted_frames_counted_exactly(built: Path, crafted: CraftedServer, kind: str) -> None:
    """Splits, long lengths, duplicate, gap, ping, close codes, a 403: the same exact report."""
    config = {
        "protocol": "pgcast",
        "targets": [["127.0.0.1", crafted.port]],
        "connections": 3,
        "mode": "per_user",
        "secret": "s" * 32,
        "sample_every": 1,
        "trace_index": 1,
        "native": kind == "native",
    }
    gen = start_loadgen(config)
    try:
        ready = orjson.loads(gen.readline(WAIT))
        assert ready["event"] == "ready"
        assert ready["subscribed"] == 2
        assert ready["failed"] == ["HTTP/1.1 403 Forbidden"]
        wait_deliveries(gen, 12)
        assert crafted.finished.wait(WAIT)
        report = gen.command({"cmd": "report", "expected": {"user:0": 6, "user:1": 6}}, WAIT)
    finally:
        gen.stop()
    assert crafted.errors == []
    assert crafted.pongs == [b"are you there"]
    assert [s["channel"] for s in sorted(crafted.subscribes, key=lambda s: s["channel"])] == [
        "user:0",
        "user:1",
    ]
    assert all(
        s == {"type": "subscribe", "channel": s["channel"], "id": 1} for s in crafted.subscribes
    )
    assert report["deliveries"] == 12  # 6 frames each, the duplicate included
    assert report["lost"] == 1  # user:0 never got seq 6
    assert report["duplicated"] == 1  # user:0 got seq 3 twice
    assert report["resyncs"] == 1
    assert report["close_codes"] == {"4001": 1, "1000": 1}
    assert report["closed"] == 3  # two closed by the server, the 403 aborted
    assert report["failed"] == ["HTTP/1.1 403 Forbidden"]
    assert len(report["latencies"]) == 12
    assert all(0 <= x < 5 for x in report["latencies"])
    assert sorted(seq for _now, _sent, seq in report["trace"]) == [1, 2, 3, 4, 5, 6]
    assert isinstance(report["cpu"], float)
    assert abs(report["time"] - time.time()) < 30


def serve_sio(listener: socket.socket, seen: list[bytes]) -> None:
    """One Engine.IO 4 / Socket.IO client: open, connect, ping, subscribe with ack, 3 events."""
    conn, _ = listener.accept()
    with conn:
        buf = bytearray()
        headers = recv_until(conn, b"\r\n\r\n", buf).decode().split("\r\n")
        assert headers[0].startswith("GET /socket.io/?EIO=4&transport=websocket ")
        key = next(
            h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("sec-websocket-key")
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + b"Sec-WebSocket-Accept: "
            + wf.accept_for(key.encode())
            + b"\r\n\r\n"
        )
        conn.sendall(wf.server_frame(b'0{"sid":"x","pingInterval":25000}'))
        seen.append(recv_frame(conn, buf)[1])  # 40
        conn.sendall(wf.server_frame(b'40{"sid":"y"}') + wf.server_frame(b"2"))
        seen.append(recv_frame(conn, buf)[1])  # the subscribe event
        seen.append(recv_frame(conn, buf)[1])  # pong "3"
        conn.sendall(wf.server_frame(b"431[true]"))
        for seq in (1, 2, 2):
            body = orjson.dumps({"bseq": seq, "bts": time.time()})
            conn.sendall(wf.server_frame(b'42["message",' + body + b"]"))
        close_after_peer(conn)


@pytest.mark.parametrize("kind", ["native", "python"])
def test_socketio_handshake_and_events(built: Path, kind: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    thread = threading.Thread(target=serve_sio, args=(listener, seen), daemon=True)
    thread.start()
    config: dict[str, Any] = {
        "protocol": "sio",
        "targets": [["127.0.0.1", listener.getsockname()[1]]],
    }
    config |= {"connections": 1, "mode": "per_user", "native": kind == "native"}
    gen = start_loadgen(config)
    try:
        ready = orjson.loads(gen.readline(WAIT))
        assert ready["subscribed"] == 1, ready
        wait_deliveries(gen, 3)
        report = gen.command({"cmd": "report", "expected": {"user:0": 2}}, WAIT)
    finally:
        gen.stop()
        thread.join(WAIT)
        listener.close()
    assert sorted(seen) == sorted([b"40", b'421["subscribe","user:0"]', b"3"])
    assert (report["deliveries"], report["lost"], report["duplicated"]) == (3, 0, 1)
    assert len(report["latencies"]) == 3


def test_native_keeps_the_pid_and_deletes_its_spec(built: Path, tmp_path: Path) -> None:
    """exec: the orchestrator measures the PID it started; the spec file is gone once read."""
    port = free_port()
    config: dict[str, Any] = {"protocol": "raw", "targets": [["127.0.0.1", port]], "connections": 2}
    config |= {"native": True, "ready_timeout": 5}
    gen = start_loadgen(config)
    try:
        ready = orjson.loads(gen.readline(WAIT))
        assert ready["subscribed"] == 0
        assert len(ready["failed"]) == 2
        assert all(f.startswith("connect: ") for f in ready["failed"])
        exe = Path(f"/proc/{gen.pid}/exe").resolve()
        assert exe == built.resolve()
        spec = Path(Path(f"/proc/{gen.pid}/cmdline").read_bytes().split(b"\0")[1].decode())
        assert spec.name.startswith("pgcast-loadgen-")
        assert not spec.exists()
        report = gen.command({"cmd": "report", "expected": {}}, WAIT)
        assert report["closed"] == 0
    finally:
        gen.stop()


def test_native_refuses_deflate_and_the_orchestrator_uses_python() -> None:
    config = LoadConfig.from_json(
        orjson.dumps({"protocol": "pgcast", "targets": [], "connections": 1, "deflate": True})
    )
    with pytest.raises(SystemExit, match="deflate"):
        exec_native(config)
    spec = DeliverySpec("broadcast", "moderate", 10, 10, 1, compression=True)
    assert loadgen_kind(spec) == "python"


def test_native_against_the_ceiling(built: Path) -> None:
    """The real ceiling program: every event to every connection once, latencies sampled."""
    port = free_port()
    ceiling = Proc(python_module("bench.ceiling", str(port)))
    try:
        ceiling.readline(WAIT)
        config: dict[str, Any] = {"protocol": "raw", "targets": [["127.0.0.1", port]]}
        config["connections"] = 50
        gen = start_loadgen(config | {"native": True, "sample_every": 10})
        try:
            ready = orjson.loads(gen.readline(WAIT))
            assert ready["subscribed"] == 50, ready
            gen.command({"cmd": "window"}, WAIT)
            sent = ceiling.command({"cmd": "run", "rate": 100, "seconds": 1}, WAIT)["sent"]
            assert sent == {"bench": 100}
            wait_deliveries(gen, 50 * 100)
            report = gen.command({"cmd": "report", "expected": sent}, WAIT)
        finally:
            gen.stop()
    finally:
        ceiling.stop()
    assert report["deliveries"] == 5000
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert len(report["latencies"]) == 5 * 100  # 5 sampled connections of 50
    assert report["failed"] == []


def test_native_against_a_pgcast_gateway(built: Path, tmp_path: Path) -> None:
    """``python -m bench --loadgen native``: real listener and gateways, nothing lost, recorded."""
    out = tmp_path / "results.json"
    argv = ["--quick", "--systems", "pgcast", "--scenarios", "broadcast/moderate"]
    argv += ["--loadgen", "native", "--quiet-wait", "0", "--out", str(out)]
    run_bench("bench", argv, timeout=100)
    [row] = orjson.loads(out.read_bytes())["deliveries"]
    assert row["loadgen"] == "native"
    assert row["subscribed"] == row["spec"]["clients"]
    assert row["events_written"] > 0
    assert row["lost"] == 0
    assert row["duplicated"] == 0
    assert row["delivered_total"] == row["events_written"] * row["spec"]["clients"]
    assert row["latency_ms"].get("p50") is not None
