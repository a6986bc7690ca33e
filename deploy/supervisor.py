"""The stack's supervisor: the processes of a plan, their probes, the status they show.

Owns one :class:`Proc` per spec plus two loops: the prober (health URL -> state,
/metrics -> the INFO column; a ``redis://`` health URL is asked over RESP, a
``postgresql://`` one by logging in) and the printer (each change: one event line,
then the table, then ``stack.json``). Processes start group by group in
``start_order``, each group once the one before is ready and ``before_group`` (the
runner's migration, say) is done; ``stop()`` stops them group by group in
``stop_order`` and awaits every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import operator
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import aiohttp

from deploy import pg_probe, redis_probe
from deploy.config import StackConfig
from deploy.preflight import StackError
from deploy.proc import Proc
from deploy.procs import ProcSpec
from deploy.status import Row, metrics_info, state_document, table

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
SERVER_SCHEMES = ("redis://", "postgresql://")

# Awaited with a group's start_order before that group (not the first) starts.
BeforeGroup = Callable[[int], Awaitable[None]]


async def _nothing(order: int) -> None:
    return None


class Supervisor:
    def __init__(
        self,
        config: StackConfig,
        specs: Sequence[ProcSpec],
        out: TextIO = sys.stdout,
        before_group: BeforeGroup = _nothing,
    ):
        self.config = config
        self.out = out
        self.before_group = before_group
        self.procs = [
            Proc(
                spec,
                config.child_env(os.environ, spec.env),
                config.log_dir / f"{spec.name}.log",
                self._changed,
                restart=config.restart,
            )
            for spec in specs
        ]
        self._events: list[str] = []
        self._dirty = asyncio.Event()
        self._change = asyncio.Event()
        self._runs: list[asyncio.Task[None]] = []
        self._loops: list[asyncio.Task[None]] = []
        self._starter: asyncio.Task[None] | None = None

    def _changed(self, proc: Proc, why: str) -> None:
        detail = f" ({why})" if why else ""
        self._events.append(f"{proc.spec.name}: {proc.state}{detail}")
        self._dirty.set()
        self._change.set()

    def rows(self) -> list[Row]:
        return [
            Row(p.spec.name, p.spec.kind, p.pid, p.spec.port, p.state, p.restarts, p.info)
            for p in self.procs
        ]

    def write_state(self) -> None:
        doc = state_document(os.getpid(), self.config.public_url, self.rows())
        tmp = self.config.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.config.state_file)

    def show(self) -> None:
        self._dirty.clear()  # whatever was pending is in this table
        for line in self._events:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.out)
        self._events.clear()
        title = f"pgcast stack on {self.config.public_url} (Ctrl-C stops it)"
        print(table(self.rows(), title), file=self.out, flush=True)
        self.write_state()

    def _start_group(self, group: Sequence[Proc]) -> None:
        for proc in group:
            self._runs.append(asyncio.create_task(proc.run(), name=proc.spec.name))

    async def start(self) -> None:
        """Start the first group of processes (plan order), the probe and print loops,
        and a starter for the later groups."""
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        key = operator.attrgetter("spec.start_order")
        groups = [list(g) for _, g in itertools.groupby(sorted(self.procs, key=key), key=key)]
        self._start_group(groups[0] if groups else [])
        self._loops.append(asyncio.create_task(self._probe_loop(), name="prober"))
        self._loops.append(asyncio.create_task(self._print_loop(), name="printer"))
        if len(groups) > 1:
            self._starter = asyncio.create_task(self._start_later(groups), name="starter")

    async def _start_later(self, groups: list[list[Proc]]) -> None:
        """Start each group once every process before it is ready; stop at a failure
        (``wait_ready`` reports it, naming the process)."""
        for before, group in itertools.pairwise(groups):
            while not all(p.state == "ready" for p in before):
                if any(p.failed for p in before):
                    return
                self._change.clear()
                await self._change.wait()
            try:
                await self.before_group(group[0].spec.start_order)
            finally:
                self._change.set()  # wait_ready looks at this task's outcome
            self._start_group(group)

    def _starter_error(self) -> BaseException | None:
        starter = self._starter
        if starter is None or not starter.done() or starter.cancelled():
            return None
        return starter.exception()

    async def wait_ready(self, limit: float) -> None:
        """Return once every process is ready; StackError naming the culprit otherwise."""
        try:
            async with asyncio.timeout(limit):
                while not all(p.state == "ready" for p in self.procs):
                    error = self._starter_error()
                    if error is not None:
                        raise error
                    failed = next((p for p in self.procs if p.failed), None)
                    if failed is not None:
                        raise StackError(
                            f"{failed.spec.name} {failed.failed} before it was ready."
                            f" Last lines of {failed.log_path}:\n{failed.log_tail()}"
                        )
                    self._change.clear()
                    await self._change.wait()
        except TimeoutError:
            late = [p for p in self.procs if p.state != "ready"]
            tails = "\n".join(f"--- {p.log_path}:\n{p.log_tail(800)}" for p in late)
            names = ", ".join(p.spec.name for p in late)
            raise StackError(f"not ready after {limit:.0f}s: {names}\n{tails}") from None

    async def _probe_server(self, proc: Proc, url: str) -> None:
        if url.startswith("postgresql://"):
            ok, info = await pg_probe.probe(url)
        else:
            ok, info = await redis_probe.probe(proc.spec.kind, url)
        proc.mark_health(ok)
        if proc.alive and proc.state in ("ready", "unhealthy"):
            proc.info = info

    async def _probe(self, session: aiohttp.ClientSession, proc: Proc) -> None:
        spec = proc.spec
        if spec.health_url is not None and spec.health_url.startswith(SERVER_SCHEMES):
            if proc.alive:
                await self._probe_server(proc, spec.health_url)
            return
        if spec.health_url is not None and proc.alive:
            try:
                async with session.get(spec.health_url, ssl=False) as resp:
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            proc.mark_health(ok)
        if spec.metrics_url is not None and proc.alive and proc.state == "ready":
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(spec.metrics_url) as resp:
                    proc.info = metrics_info(spec.kind, await resp.text())

    async def _probe_loop(self) -> None:
        async with aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as session:
            for rounds in itertools.count():
                await asyncio.gather(*(self._probe(session, p) for p in self.procs))
                if rounds % 4 == 0:
                    self.write_state()
                all_ready = all(p.state == "ready" for p in self.procs)
                await asyncio.sleep(1.0 if all_ready else 0.25)

    async def _print_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.3)  # one table for a burst of changes
            if self._dirty.is_set():  # unless show() was called meanwhile
                self.show()

    async def stop(self) -> None:
        """Stop the processes in stop order, then the loops; awaits everything started."""
        if self._starter is not None:  # nothing more starts once stopping began
            self._starter.cancel()
            # Its error, if any, was wait_ready's to raise.
            await asyncio.gather(self._starter, return_exceptions=True)
        for _, group in itertools.groupby(
            sorted(self.procs, key=lambda p: p.spec.stop_order), key=lambda p: p.spec.stop_order
        ):
            await asyncio.gather(*(p.stop() for p in group))
        # Every child is gone now; a run() still waiting is in a restart delay.
        for task in self._runs + self._loops:
            task.cancel()
        await asyncio.gather(*self._runs, *self._loops, return_exceptions=True)
        self.show()
        self.config.state_file.unlink(missing_ok=True)
