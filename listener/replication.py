"""One logical replication stream (PGCAST_CAPTURE=wal): pgoutput frames from a slot.

Owns one ``replication=database`` libpq connection (psycopg's low-level ``PGconn``;
asyncpg has no replication protocol) driven from the event loop, and the task that
sends standby status updates. Invariant: the flush position reported to the server
is never ahead of what the consumer passed to :meth:`ReplicationStream.confirm`,
so the slot's ``confirmed_flush_lsn`` only moves to what is durable downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from listener.replication_wire import (
    KEEPALIVE,
    XLOGDATA,
    ReplicationError,
    XLogData,
    classify,
    format_lsn,
    start_command,
    status_update,
)

log = logging.getLogger(__name__)

# Session settings the decoder relies on to parse pgoutput's text values. No TimeZone: a
# timestamptz must render in the server's default zone, as the writers' triggers would
# (listener/wal_events.py).
SESSION_OPTIONS = "-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1"
APPLICATION_NAME = "pgcast-listener"
# Coalesce confirm() calls into at most one status update per this many seconds.
CONFIRM_DELAY = 0.05
CLOSE_TIMEOUT = 2.0


def _result_error(result: pq.abc.PGresult | None, pgconn: pq.abc.PGconn) -> ReplicationError:
    if result is None or result.status == pq.ExecStatus.COMMAND_OK:
        return _conn_error(pgconn, "the server ended the stream")
    sqlstate, primary, detail = (
        (result.error_field(field) or b"").decode(errors="replace")
        for field in (
            pq.DiagnosticField.SQLSTATE,
            pq.DiagnosticField.MESSAGE_PRIMARY,
            pq.DiagnosticField.MESSAGE_DETAIL,
        )
    )
    message = primary or f"unexpected result {pq.ExecStatus(result.status).name}"
    if detail:
        message += f" (DETAIL: {detail})"
    return ReplicationError(classify(sqlstate or None, message), message, sqlstate or None)


def _conn_error(pgconn: pq.abc.PGconn, default: str) -> ReplicationError:
    message = pgconn.get_error_message().strip() or default
    return ReplicationError(classify(None, message), message)


async def _wait_fd(fd: int, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    add, remove = (
        (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    )
    add(fd, on_ready)
    try:
        await ready
    finally:
        remove(fd)


async def _connect(conninfo: str) -> pq.abc.PGconn:
    # connect_start may resolve the host name (blocking): off the loop.
    pgconn = await asyncio.to_thread(pq.PGconn.connect_start, conninfo.encode())
    try:
        while True:
            if pgconn.status == pq.ConnStatus.BAD:
                raise _conn_error(pgconn, "connection failed")
            state = pgconn.connect_poll()
            if state == pq.PollingStatus.OK:
                pgconn.nonblocking = 1  # libpq never waits on the socket from here on
                return pgconn
            if state == pq.PollingStatus.FAILED:
                raise _conn_error(pgconn, "connection failed")
            # The socket can change between polls (another host, SSL retry).
            await _wait_fd(pgconn.socket, write=state == pq.PollingStatus.WRITING)
    except BaseException:
        pgconn.finish()
        raise


class ReplicationStream:
    """A started replication stream: :meth:`read` frames, :meth:`confirm` what is durable.

    One consumer task calls read/pending/confirm and, after it stopped reading, close.
    """

    def __init__(self, pgconn: pq.abc.PGconn, status_interval: float) -> None:
        self._pgconn = pgconn
        self._fd = pgconn.socket
        self._status_interval = status_interval
        self._confirmed = 0  # 0/0 (invalid): the server ignores it, the slot stays put
        # The server's position from its keepalives: every change before it was sent. A
        # consumer that has handled every frame before a keepalive may confirm it, so a
        # slot moves on while nothing it publishes changes (else it holds all the WAL).
        self.sent_end = 0
        self._confirm_event = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._writing = False
        self._copy_ended = False
        self._error: ReplicationError | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def start(
        cls,
        dsn: str,
        slot: str,
        publications: Sequence[str],
        start_lsn: int = 0,
        *,
        connect_timeout: float = 10.0,
        status_interval: float = 10.0,
        conninfo: Mapping[str, str] | None = None,
    ) -> ReplicationStream:
        """Connect and START_REPLICATION; ``start_lsn`` 0 resumes at the slot's confirmed LSN.
        ``conninfo``: more libpq parameters (keepalives, tcp_user_timeout)."""
        full = make_conninfo(
            dsn,
            replication="database",
            application_name=APPLICATION_NAME,
            options=SESSION_OPTIONS,
            **(conninfo or {}),
        )
        try:
            async with asyncio.timeout(connect_timeout):
                pgconn = await _connect(full)
                stream = cls(pgconn, status_interval)
                try:
                    await stream._start_copy(start_command(slot, publications, start_lsn))
                except BaseException:
                    stream._abort()
                    raise
        except TimeoutError:
            raise ReplicationError(
                "connection", f"no replication stream within {connect_timeout}s"
            ) from None
        stream._status_task = asyncio.create_task(stream._run_status(), name="replication-status")
        log.info("replication stream started on slot %s at %s", slot, format_lsn(start_lsn))
        return stream

    async def read(self) -> XLogData:
        """The next XLogData frame; answers keepalives on the way."""
        while True:
            frame = self.pending()
            if frame is not None:
                return frame
            await self._wait_readable()
            self._consume()

    def pending(self) -> XLogData | None:
        """The next XLogData frame libpq has already received, or None: never waits."""
        if self._error is not None:
            raise self._error
        while not self._copy_ended:
            try:
                size, data = self._pgconn.get_copy_data(1)
            except psycopg.OperationalError:
                size, data = -2, memoryview(b"")
            if size == 0:
                return None
            if size == -1:
                self._copy_ended = True
            elif size < 0:
                raise self._fail(_conn_error(self._pgconn, "the replication stream broke"))
            elif data[0] == ord("w"):
                wal_start, wal_end, _clock = XLOGDATA.unpack_from(data, 1)
                return XLogData(wal_start, wal_end, bytes(data[1 + XLOGDATA.size :]))
            elif data[0] == ord("k"):
                self._keepalive(data)
        # The server left COPY: its final result (an error, usually) says why.
        if self._pgconn.is_busy():
            return None  # not all of it has arrived: read() waits for more
        raise self._fail(_result_error(self._pgconn.get_result(), self._pgconn))

    def _keepalive(self, data: memoryview) -> None:
        wal_end, _clock, reply = KEEPALIVE.unpack_from(data, 1)
        self.sent_end = max(self.sent_end, wal_end)
        if reply:
            self._send_status()  # the server wants a reply before wal_sender_timeout

    def confirm(self, lsn: int) -> None:
        """Everything before ``lsn`` is durable downstream: the slot may move up to it."""
        if lsn > self._confirmed:
            self._confirmed = lsn
            self._confirm_event.set()

    async def close(self) -> None:
        """Report the confirmed position, end COPY (releasing the slot), close; bounded."""
        if self._closed:
            return
        self._closed = True
        if self._status_task is not None:
            self._status_task.cancel()
            await asyncio.wait([self._status_task])  # our cancellation still propagates
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._end_copy()
        except (TimeoutError, ReplicationError, psycopg.Error) as exc:
            log.debug("replication stream closed without a clean end: %s", exc)
        finally:
            self._abort()
            self._fail(ReplicationError("connection", "the replication stream is closed"))

    async def _start_copy(self, command: bytes) -> None:
        self._pgconn.send_query(command)
        await self._flush_all()
        result = await self._next_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            raise _result_error(result, self._pgconn)

    async def _end_copy(self) -> None:
        """Send CopyDone and wait for the server's CommandComplete: its slot is free then."""
        if self._error is not None:
            return
        self._pgconn.put_copy_data(status_update(self._confirmed))
        self._pgconn.put_copy_end()
        await self._flush_all()
        # Frames still in flight are dropped (nobody confirmed them) until pending() raises
        # the server's final result: CommandComplete, sent after it released the slot.
        with contextlib.suppress(ReplicationError):
            while True:
                if self.pending() is None:
                    await self._wait_readable()
                    self._consume()

    async def _next_result(self) -> pq.abc.PGresult | None:
        while self._pgconn.is_busy():  # get_result would block on the socket otherwise
            await self._wait_readable()
            self._consume()
        return self._pgconn.get_result()

    async def _run_status(self) -> None:
        """Status updates: soon after a confirm (coalesced), else every status_interval."""
        while self._error is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._status_interval):
                    await self._confirm_event.wait()
            self._confirm_event.clear()
            self._send_status()
            await asyncio.sleep(CONFIRM_DELAY)

    def _send_status(self) -> None:
        if self._error is not None or self._closed:
            return
        try:
            # 0: libpq's buffer is full; the next interval's update carries the position.
            if self._pgconn.put_copy_data(status_update(self._confirmed)):
                self._flush()
        except psycopg.OperationalError:
            self._fail(_conn_error(self._pgconn, "sending a status update failed"))

    def _flush(self) -> None:
        if self._pgconn.flush() and not self._writing:
            asyncio.get_running_loop().add_writer(self._fd, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        try:
            done = not self._pgconn.flush()
        except psycopg.OperationalError:
            done = True
            self._fail(_conn_error(self._pgconn, "sending to the server failed"))
        if done:
            asyncio.get_running_loop().remove_writer(self._fd)
            self._writing = False
        self._wake()  # a blocked flush may have read input into libpq's buffer

    async def _flush_all(self) -> None:
        try:
            while self._pgconn.flush():
                await _wait_fd(self._fd, write=True)
        except psycopg.OperationalError:
            raise self._fail(_conn_error(self._pgconn, "sending to the server failed")) from None

    def _consume(self) -> None:
        try:
            self._pgconn.consume_input()
        except psycopg.OperationalError:
            raise self._fail(
                _conn_error(self._pgconn, "the server closed the connection")
            ) from None

    async def _wait_readable(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        loop.add_reader(self._fd, self._wake)
        try:
            await self._waiter
        finally:
            loop.remove_reader(self._fd)
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: ReplicationError) -> ReplicationError:
        """Remember the first error (every later call raises it) and wake the reader."""
        if self._error is None:
            self._error = error
            if not self._closed:
                log.info("replication stream failed (%s): %s", error.kind, error)
        self._wake()
        return self._error

    def _abort(self) -> None:
        if self._writing:
            asyncio.get_running_loop().remove_writer(self._fd)
            self._writing = False
        with contextlib.suppress(psycopg.OperationalError):
            self._pgconn.nonblocking = 1  # finish() sends Terminate: never wait on a dead peer
        self._pgconn.finish()
