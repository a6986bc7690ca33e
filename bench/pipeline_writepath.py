"""The write-path part of ``python -m bench.pipeline``: pgbench TPS per trigger variant.

Each variant runs a one-row INSERT under pgbench at N clients on the durable private
Postgres; beside TPS it records the CPU each process group spent per transaction
(postgres backends, the listener and its backend, Redis, pgbench itself), how busy the
machine was (other work included), and sampled wait events of the pgbench backends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.pipeline import ListenerProcess, listener, log, poll_until
from bench.writepath_cpu import TICK, CpuMeter
from tests.servers import PgInstance, RedisInstance

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
PGBENCH_SCRIPT = "\\set v random(1, 100000)\nINSERT INTO wp (v, note) VALUES (:v, 'row');\n"
WP_TABLE = """
DROP TABLE IF EXISTS wp;
CREATE TABLE wp (id bigserial PRIMARY KEY, v int NOT NULL, note text);
"""
TRIGGERS = {
    "pgcast": "EXECUTE FUNCTION pgcast.notify_trigger('wp')",
    "classic": "EXECUTE FUNCTION wp_classic()",
    "noop": "EXECUTE FUNCTION wp_noop()",
    "outbox": "EXECUTE FUNCTION wp_outbox()",
    "minimal": "EXECUTE FUNCTION wp_minimal_event()",
}
# The trigger pgcast.watch() generates for the table (one INSERT and the wake-up).
WATCH_SQL = "SELECT pgcast.watch('wp', '{wp}', '{INSERT}')"
# The end of a trigger that publishes: pgcast's wake-up (sql/001_outbox.sql), as
# pgcast.watch writes it.
WAKE_UP_AND_END = """    IF pgcast.wake_needed() THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN NULL;
END
$$;
"""
# The classic bridge's trigger, and three yardsticks that split pgcast's cost: a PL/pgSQL
# trigger that does nothing, one that only inserts a constant outbox row, and the least
# any outbox trigger does for an event to arrive: a constant row and the wake-up.
FUNCTIONS = (
    """
CREATE OR REPLACE FUNCTION wp_classic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('wp', json_build_object('id', NEW.id, 'v', NEW.v)::text); RETURN NEW; END
$$;
CREATE OR REPLACE FUNCTION wp_noop() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NEW; END
$$;
CREATE OR REPLACE FUNCTION wp_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO pgcast.outbox (channel, data) VALUES ('wp', '{"id": 1}'); RETURN NEW; END
$$;
CREATE OR REPLACE FUNCTION wp_minimal_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgcast.outbox (channel, data) VALUES ('wp', '{"id": 1}');
"""  # noqa: S608 (constants only)
    + WAKE_UP_AND_END
)
# The listener's counters of the wake-up protocol, read before and after each run.
WAKE_METRICS = (
    "pgcast_listener_wakeups_total",
    "pgcast_listener_sleeps_total",
    "pgcast_listener_wakes_total",
)


@dataclass(frozen=True)
class Variant:
    trigger: str | None  # a TRIGGERS key, or "watch" (pgcast.watch generates it)
    notify: str  # the writers' pgcast.notify
    # PGCAST_NOTIFY_MODE of a running listener; "listen": classic LISTENer; "wal": a listener
    # with PGCAST_CAPTURE=wal (the watch trigger is turned off, the WAL is decoded)
    listener: str | None


# (pgcast.notify 'auto' is the default; 'on' and 'off' are what the older modes need.)
VARIANTS = {
    "plain": Variant(None, "auto", None),
    "auto": Variant("pgcast", "auto", "auto"),
    "watch": Variant("watch", "auto", "auto"),
    "wal": Variant("watch", "auto", "wal"),
    "notify": Variant("pgcast", "on", "notify"),
    "poll": Variant("pgcast", "off", "poll"),
    "classic": Variant("classic", "auto", "listen"),
    "auto_trigger_only": Variant("pgcast", "auto", None),
    "watch_trigger_only": Variant("watch", "auto", None),
    "notify_trigger_only": Variant("pgcast", "on", None),
    "poll_trigger_only": Variant("pgcast", "off", None),
    "noop_trigger": Variant("noop", "auto", None),
    "outbox_row_only": Variant("outbox", "auto", None),
    "minimal_event": Variant("minimal", "auto", "auto"),
    "minimal_event_trigger_only": Variant("minimal", "auto", None),
}


def pgbench(pg: PgInstance, clients: int, seconds: int) -> tuple[float, int, float]:
    """(TPS, transactions, pgbench's own CPU seconds) of one run of the one-row INSERT."""
    binary = PGBENCH if os.access(PGBENCH, os.X_OK) else shutil.which("pgbench") or "pgbench"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    argv = [binary, "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", script.name]
    try:
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen([*argv, pg.dsn], stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            text = out.read().decode()
    finally:
        Path(script.name).unlink()
    tps = re.search(r"tps = ([\d.]+)", text)
    done = re.search(r"number of transactions actually processed: (\d+)", text)
    if proc.returncode != 0 or tps is None or done is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{text}")
    return float(tps.group(1)), int(done.group(1)), usage.ru_utime + usage.ru_stime


async def sample_waits(dsn: str, stop: asyncio.Event) -> collections.Counter[str]:
    """What the pgbench backends are doing, sampled every 20 ms: 'CPU' (active, no wait
    event), 'idle (client)' (waiting for pgbench), or the wait event."""
    conn = await asyncpg.connect(dsn)
    seen: collections.Counter[str] = collections.Counter()
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE application_name = 'pgbench'"
            )
            for row in rows:
                if row["state"] != "active":
                    seen[f"{row['state']} (client)"] += 1
                elif row["wait_event"] is None:
                    seen["CPU"] += 1
                else:
                    seen[f"{row['wait_event_type']}:{row['wait_event']}"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
    finally:
        await conn.close()
    return seen


WAL_SLOT = "pgcast_bench"


async def _prepare(conn: asyncpg.Connection, variant: Variant) -> None:
    # Back to the outbox path, without the WAL variant's slot (it would keep all the WAL).
    await conn.execute("SELECT pgcast.set_capture('outbox')")
    await conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE slot_name = $1 AND NOT active",
        WAL_SLOT,
    )
    await conn.execute(WP_TABLE + FUNCTIONS)
    await conn.execute("DELETE FROM pgcast.outbox")
    await conn.execute("VACUUM pgcast.outbox")
    await conn.execute("CHECKPOINT")
    if variant.trigger == "watch":
        await conn.execute(WATCH_SQL)
    elif variant.trigger is not None:
        await conn.execute(
            f"CREATE TRIGGER wp_event AFTER INSERT ON wp FOR EACH ROW {TRIGGERS[variant.trigger]}"
        )
    await conn.execute(f"ALTER DATABASE postgres SET pgcast.notify = '{variant.notify}'")


# Bytes of WAL written up to the end of the run that the slot has not confirmed yet.
WAL_BACKLOG_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn)
FROM pg_replication_slots WHERE slot_name = $1
"""


async def _wal_streaming(conn: asyncpg.Connection) -> None:
    """Until the WAL listener streams from its slot (the trigger is off from then on)."""
    async with asyncio.timeout(30):
        await poll_until(
            lambda: conn.fetchval(
                "SELECT (SELECT mode FROM pgcast.capture) = 'wal' AND EXISTS (SELECT FROM"
                " pg_replication_slots WHERE slot_name = $1 AND active)",
                WAL_SLOT,
            ),
            bool,
            every=0.05,
        )


async def _listener_backend(conn: asyncpg.Connection) -> int | None:
    """The leader's backend pid, once it holds the lock (None without a listener)."""
    async with asyncio.timeout(30):
        while True:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgcast-listener'"
            )
            if pid is not None:
                await asyncio.sleep(0.5)  # past the catch-up drain
                return int(pid)
            await asyncio.sleep(0.05)


async def run_variant(
    pg: PgInstance, rd: RedisInstance, variant: Variant, clients: int, seconds: int
) -> dict[str, Any]:
    """One pgbench run of ``variant``: TPS, CPU per transaction by group, wait events."""
    conn = await asyncpg.connect(pg.dsn)
    consumer: asyncpg.Connection | None = None
    running: ListenerProcess | None = None
    wake: dict[str, float] = {}
    received = collections.Counter[str]()
    try:
        await _prepare(conn, variant)
        with contextlib.ExitStack() as stack:
            others = {"redis": rd.proc.pid if rd.proc else 0}
            backend = None
            if variant.listener == "listen":  # the classic bridge's one LISTENer
                consumer = await asyncpg.connect(pg.dsn)
                await consumer.add_listener("wp", lambda *_: received.update(["n"]))
                backend = consumer.get_server_pid()
            elif variant.listener == "wal":
                wal = {"PGCAST_CAPTURE": "wal", "PGCAST_WAL_SLOT": WAL_SLOT}
                running = stack.enter_context(listener(pg, rd, **wal))
                others["listener"] = running.proc.pid
                backend = await _listener_backend(conn)
                await _wal_streaming(conn)
                before = running.metrics(*WAKE_METRICS)
            elif variant.listener is not None:
                running = stack.enter_context(listener(pg, rd, PGCAST_NOTIFY_MODE=variant.listener))
                others["listener"] = running.proc.pid
                backend = await _listener_backend(conn)
                before = running.metrics(*WAKE_METRICS)
            meter = CpuMeter(pg.postmaster_pid(), backend, others)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_waits(pg.dsn, stop))
            meter.start()
            tps, txns, pgbench_cpu = await asyncio.to_thread(pgbench, pg, clients, seconds)
            stop.set()
            waits = await sampler
            if running is not None:  # what the wake-up protocol did during the run
                after = running.metrics(*WAKE_METRICS)
                wake = {k: after[k] - before.get(k, 0.0) for k in after}
            await asyncio.sleep(0.3)  # pgbench's backends exit and are reaped
            cpu = meter.stop()
            backlog = int(await conn.fetchval("SELECT count(*) FROM pgcast.outbox"))
            caught_up = time.perf_counter()
            if variant.listener == "wal" and running is not None:
                # The backlog: WAL the slot had not confirmed; caught up: every row published.
                backlog = int(await conn.fetchval(WAL_BACKLOG_SQL, WAL_SLOT) or 0)
                published = 'pgcast_listener_events_total{result="published"}'
                listener_ = running
                async with asyncio.timeout(120):
                    await poll_until(
                        lambda: asyncio.to_thread(
                            lambda: int(listener_.metrics(published).get(published, 0))
                        ),
                        lambda n: n >= txns,
                        every=0.05,
                    )
            elif variant.listener not in (None, "listen"):
                async with asyncio.timeout(120):
                    await poll_until(
                        lambda: conn.fetchval("SELECT count(*) FROM pgcast.outbox"),
                        lambda n: n == 0,
                        every=0.05,
                    )
            catch_up = time.perf_counter() - caught_up
    finally:
        if consumer is not None:
            await consumer.close()
        await conn.close()
    cpu["pgbench"] = pgbench_cpu
    result = _summary(variant, tps, txns, cpu, waits, backlog, catch_up, received["n"])
    if wake:
        result["listener_wakeup"] = {k.removeprefix("pgcast_listener_"): v for k, v in wake.items()}
    return result


def _summary(
    variant: Variant,
    tps: float,
    txns: int,
    cpu: dict[str, float],
    waits: collections.Counter[str],
    backlog: int,
    catch_up: float,
    received: int,
) -> dict[str, Any]:
    groups = ["postgres_total", "pg_listener_backend", "pg_walsender", "pg_background", "pgbench"]
    groups += [g for g in ("listener", "redis") if g in cpu]
    per_txn = {g: round(cpu.get(g, 0.0) / txns * 1e6, 1) for g in groups}
    per_txn["all"] = round(sum(cpu[g] for g in groups if not g.startswith("pg_")) / txns * 1e6, 1)
    busy = cpu["machine_busy"] / cpu["machine_total"]
    mine = sum(cpu[g] for g in groups if not g.startswith("pg_"))
    cores = os.cpu_count() or 1
    window = cpu["machine_total"] / cores * TICK  # seconds of the measured window
    samples = sum(waits.values()) or 1
    result = {
        "tps": round(tps),
        "transactions": txns,
        "cpu_us_per_txn": per_txn,
        "machine_busy": round(busy, 2),
        "machine_busy_other_work": round(max(0.0, busy - mine / (window * cores)), 2),
        "pgbench_backends": {k: round(v / samples, 3) for k, v in waits.most_common(6)},
    }
    if variant.listener == "wal":
        result["wal_backlog_bytes_at_end"] = backlog
        result["catch_up_s"] = round(catch_up, 2)
    elif variant.listener not in (None, "listen"):
        result["outbox_backlog_at_end"] = backlog
        result["catch_up_s"] = round(catch_up, 2)
    if variant.listener == "listen":
        result["notifications_received"] = received
    return result


async def bench_writepath(
    pg: PgInstance, rd: RedisInstance, names: list[str], clients: int, seconds: int, rounds: int
) -> dict[str, Any]:
    """Every variant, ``rounds`` times interleaved; ratios against plain in the same round."""
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown write-path variants {unknown}; known: {list(VARIANTS)}")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_no in range(rounds):
        for name in names:
            result = await run_variant(pg, rd, VARIANTS[name], clients, seconds)
            runs[name].append(result)
            log(f"round {round_no + 1} {name}: {result['tps']} TPS, {result['cpu_us_per_txn']}")
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute("ALTER DATABASE postgres RESET pgcast.notify")
    await admin.close()
    report: dict[str, Any] = {"clients": clients, "seconds_each": seconds, "rounds": rounds}
    for name in names:
        tps = [run["tps"] for run in runs[name]]
        entry: dict[str, Any] = {"tps": tps, "runs": runs[name]}
        if "plain" in runs and name != "plain":
            ratios = [
                run["tps"] / plain["tps"]
                for run, plain in zip(runs[name], runs["plain"], strict=True)
            ]
            entry["ratio"] = [round(r, 3) for r in ratios]
            entry["ratio_median"] = round(statistics.median(ratios), 3)
        report[name] = entry
    return report


def median_run(entry: dict[str, Any]) -> dict[str, Any]:
    """The run of a variant's rounds with the median TPS (the one tables show)."""
    runs = sorted(entry["runs"], key=lambda run: run["tps"])
    median: dict[str, Any] = runs[len(runs) // 2]
    return median


def table(report: dict[str, Any]) -> str:
    """The write path as a Markdown table (medians over rounds; CPU of the median run)."""
    lines = [
        "| variant | TPS | × plain | CPU µs/txn: postgres (listener's backend) | listener "
        "| redis | pgbench | all | machine busy (other work) | pgbench backends: top waits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        entry = report.get(name)
        if entry is None:
            continue
        run = median_run(entry)
        cpu = run["cpu_us_per_txn"]
        waits = ", ".join(f"{k} {v:.0%}" for k, v in list(run["pgbench_backends"].items())[:3])
        lines.append(
            f"| {name} | {run['tps']} | {entry.get('ratio_median', 1.0):.2f} "
            f"| {cpu['postgres_total']:.0f} ({cpu['pg_listener_backend']:.0f}) "
            f"| {cpu.get('listener', 0):.0f} | {cpu.get('redis', 0):.0f} | {cpu['pgbench']:.0f} "
            f"| {cpu['all']:.0f} | {run['machine_busy']:.0%} "
            f"({run['machine_busy_other_work']:.0%}) | {waits} |"
        )
    return "\n".join(lines)
