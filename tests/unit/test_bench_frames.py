"""Pure parts of the benchmark: WebSocket client framing, percentiles, results rendering."""

from __future__ import annotations

import zlib

from bench import wsframes as wf
from bench.report import cpu_floor_ms, render
from bench.stats import percentiles, ratio


def unmask(frame: bytes) -> tuple[int, bytes]:
    """Decode one masked client frame (what a server does)."""
    opcode, length, pos = frame[0] & 0x0F, frame[1] & 0x7F, 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
    mask, payload = frame[pos : pos + 4], frame[pos + 4 : pos + 4 + length]
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_accept_key_matches_rfc6455_example() -> None:
    """The handshake check uses the RFC 6455 section 1.3 example."""
    assert wf.accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_frames_are_masked_and_round_trip_at_every_length_encoding() -> None:
    """Clients must mask; 7-bit, 16-bit and 64-bit lengths all decode back."""
    for size in (0, 5, 125, 126, 65535, 65536):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        frame = wf.client_frame(payload)
        assert frame[1] & 0x80
        assert unmask(frame) == (wf.OP_TEXT, payload)


def test_split_frames_keeps_partial_frames_for_the_next_read() -> None:
    """Complete frames come out; a partial one stays in the buffer."""
    one, two = wf.server_frame(b"a" * 10), wf.server_frame(b"b" * 300)
    buf = bytearray(one + two[:50])
    frames, used = wf.split_frames(buf)
    assert frames == [(wf.OP_TEXT, False, b"a" * 10)]
    assert used == len(one)
    del buf[:used]
    buf += two[50:]
    assert wf.split_frames(buf) == ([(wf.OP_TEXT, False, b"b" * 300)], len(two))


def test_upgrade_response_reports_deflate_and_refuses_a_bad_accept() -> None:
    """permessage-deflate is detected; a wrong accept key is an error."""
    key = wf.new_key()
    head = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Accept: " + wf.accept_for(key) + b"\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate"
    )
    assert wf.parse_upgrade_response(head, key) is True
    try:
        wf.parse_upgrade_response(head, wf.new_key())
    except wf.HandshakeError:
        pass
    else:
        raise AssertionError("a wrong Sec-WebSocket-Accept was accepted")


def test_inflate_reads_a_permessage_deflate_message() -> None:
    """A raw-deflate message with its tail stripped (RFC 7692) inflates back."""
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = deflater.compress(b'{"bseq": 1}') + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert wf.inflate(wf.inflater(), body[:-4]) == b'{"bseq": 1}'


def test_percentiles_and_ratio() -> None:
    """Nearest-rank percentiles; a ratio with a missing side is None."""
    stats = percentiles([float(x) for x in range(1, 101)])
    assert (stats["p50"], stats["p99"], stats["max"], stats["count"]) == (50, 99, 100, 100)
    assert percentiles([]) == {"count": 0}
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None


def test_render_marks_missing_measurements_instead_of_failing() -> None:
    """A results file with only some scenarios renders, with n/a where data is missing."""
    text = render({"command": "python -m bench --quick", "machine": {}, "deliveries": []})
    assert "| pgcast ÷ Node Socket.IO, server-side CPU µs/delivery | n/a |" in text


def _ceiling_row(clients: int, server_us: float, loadgen_us: float | None) -> dict[str, object]:
    row: dict[str, object] = {
        "system": "ceiling",
        "spec": {
            "scenario": "broadcast",
            "level": "moderate",
            "clients": clients,
            "compression": False,
            "procs": 2,
            "rate": 20,
        },
        "cpu_us_per_delivery": server_us,
        "deliveries_per_s": 20000.0,
        "window_s": 10.0,
        "cpu_s": {"loadgen": 1.5},  # 7.5 µs over 200,000 deliveries
        "run_cpu_us_per_delivery": server_us,
        "deliveries_per_server_cpu_s": 100000,
        "latency_ms": {"p50": 7.8, "p99": 21.6},
        "lost": 0,
        "duplicated": 0,
        "loadgen_cpu_cores": 0.15,
        "loadgen": "native",
    }
    if loadgen_us is not None:
        row["loadgen_cpu_us_per_delivery"] = loadgen_us
    return row


def test_cpu_floor_is_half_an_events_cpu_spread_over_the_cores() -> None:
    """1,000 clients × (9 + 7 µs) of CPU per delivery on 2 cores: the 500th delivery of an
    event completes no sooner than 500 × 16 µs ÷ 2 = 4 ms after it."""
    doc = {"machine": {"cores": 2}, "deliveries": [_ceiling_row(1000, 9.0, 7.0)]}
    assert cpu_floor_ms(doc, "broadcast/moderate") == 4.0
    assert cpu_floor_ms(doc, "per_user/moderate") is None  # no ceiling row: no floor
    older = {"machine": {"cores": 2}, "deliveries": [_ceiling_row(1000, 9.0, None)]}
    assert cpu_floor_ms(older, "broadcast/moderate") == 4.12  # loadgen from its CPU seconds
    text = render(doc)
    assert "| broadcast/moderate p50 floor: any server, clients on the same cores" in text
    assert "| 4.0 | ≤ 3 for the target to be reachable | **no** |" in text
