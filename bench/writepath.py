"""Write-path cost for ``python -m bench``: pgbench TPS of a one-row INSERT at 64 clients.

The variants run through bench.pipeline_writepath on the suite's own durable Postgres and
Redis: interleaved rounds, a fresh table, an emptied and vacuumed outbox and a CHECKPOINT
before every run, the real listener draining, CPU per process group (run one after another
on a growing table, the first variant would have the cleanest database). This module keeps
the names the results files and the report have always had, and each variant's median over
the rounds:

- ``plain``: no trigger;
- ``pgcast-auto``: ``pgcast.notify_trigger('wp')`` as shipped (``pgcast.notify`` unset,
  listener mode ``auto``: the wake-up NOTIFY only while the listener sleeps);
- ``pgcast-always-notify``: ``pgcast.notify = on``, listener mode ``notify``;
- ``pgcast-poll``: the same trigger, ``pgcast.notify = off``, listener polling;
- ``pgcast-watch-auto``: the trigger ``pgcast.watch('wp', '{wp}', '{INSERT}')`` generates
  for the table (one INSERT and the wake-up), listener mode ``auto``;
- ``pgcast-wal``: the same declaration with a ``PGCAST_CAPTURE=wal`` listener: the trigger
  is off, the listener decodes the WAL (its walsender counted with Postgres);
- ``classic``: a per-row ``pg_notify('wp', row json)`` trigger with one LISTENer.
"""

from __future__ import annotations

from typing import Any

from bench.env import BenchEnv

# results name -> bench.pipeline_writepath variant
VARIANTS = {
    "plain": "plain",
    "pgcast-auto": "auto",
    "pgcast-always-notify": "notify",
    "pgcast-poll": "poll",
    "pgcast-watch-auto": "watch",
    "pgcast-wal": "wal",
    "classic": "classic",
}
# the issue's >= 0.75x applies to these
TARGETED = ("pgcast-auto", "pgcast-poll", "pgcast-watch-auto")
WAL_TARGET = 0.85  # PGCAST_CAPTURE=wal against the plain table (issue 15)


async def run_writepath(
    env: BenchEnv, *, clients: int, seconds: float, rounds: int = 3
) -> dict[str, Any]:
    # Imported here: bench.report reads TARGETED and needs none of the pipeline's machinery.
    from bench.pipeline_writepath import bench_writepath, median_run

    names = list(VARIANTS.values())
    report = await bench_writepath(env.pg, env.redis, names, clients, int(seconds), rounds)
    rows = []
    for label, name in VARIANTS.items():
        entry = report[name]
        median = median_run(entry)
        row: dict[str, Any] = {
            "variant": label,
            "clients": clients,
            "tps": median["tps"],
            "tps_rounds": entry["tps"],
            "ratio_vs_plain": entry.get("ratio_median", 1.0),
            "ratio_rounds": entry.get("ratio", []),
            "cpu_us_per_txn": median["cpu_us_per_txn"],
            "pgbench_backends": median["pgbench_backends"],
        }
        backlogs = ("outbox_backlog_at_end", "wal_backlog_bytes_at_end")
        for key in (*backlogs, "catch_up_s", "listener_wakeup"):
            if key in median:
                row[key] = median[key]
        rows.append(row)
    return {"clients": clients, "seconds": seconds, "rounds": rounds, "variants": rows}
