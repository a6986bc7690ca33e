"""gunicorn settings for the gateway: aiohttp's uvloop worker, bound from the contract's env.

Used by the image (``gunicorn -c deploy/gunicorn_conf.py gateway.app:gunicorn_app``)
and by ``make up --server gunicorn``. The graceful timeout covers the gateway's
drain window (``PGCAST_DRAIN_SECONDS``) with room for the final closes; the
pod's ``terminationGracePeriodSeconds`` in k8s/ covers this in turn. With
``PROMETHEUS_MULTIPROC_DIR`` set, the master empties that directory at start and
drops a dead worker's live gauges, so any worker's /metrics sums the live ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Imported by the master, before any worker forks: prometheus-client chooses file-backed
# values from PROMETHEUS_MULTIPROC_DIR once, at import, and the workers inherit that.
from prometheus_client import multiprocess

_drain = float(os.environ.get("PGCAST_DRAIN_SECONDS") or 5.0)

bind = f"{os.environ.get('PGCAST_HOST') or '0.0.0.0'}:{os.environ.get('PGCAST_PORT') or 8080}"
worker_class = "aiohttp.worker.GunicornUVLoopWebWorker"
# One worker per container by default: scale with replicas, so each /metrics and
# /readyz describes exactly one process. WEB_CONCURRENCY is gunicorn's own knob.
workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
graceful_timeout = int(_drain + 10)
timeout = 30
# aiohttp's access log would print query strings, and ?token= is allowed.
accesslog = None
errorlog = "-"
# gunicorn >= 25 opens a control socket in $HOME/.gunicorn: several gateways on one
# host would share that path, and the image's home is read-only. Older versions
# ignore the name.
control_socket_disable = True
# The root filesystem is read-only in the image's deployments: heartbeat files go to
# the tmpfs that containers always have.
_SHM = "/dev/shm"  # noqa: S108 - a tmpfs, the usual place for gunicorn's heartbeat files
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None


def _metrics_dir() -> Path | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


def on_starting(server: Any) -> None:
    """Start from an empty metrics directory: an emptyDir outlives container restarts,
    and a previous run's files would be summed in."""
    path = _metrics_dir()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its connections, subscriptions and readiness stop counting (its
    counters stay: they happened)."""
    path = _metrics_dir()
    if path is not None:
        multiprocess.mark_process_dead(worker.pid, str(path))  # type: ignore[no-untyped-call]
