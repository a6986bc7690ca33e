"""Publish events to Redis through ``publish.lua``: fenced, de-duplicated, numbered.

A batch is one pipelined round trip of EVALSHA calls, one per run of events on the
same channel (at most RUN_MAX events each), then ``WAIT`` when replicas must
acknowledge it; the script is loaded on NOSCRIPT and the batch retried once.
Each run carries its channel's watermark (the last epoch and top offset Redis
acknowledged, :class:`Mark`): the script starts a new epoch where Redis went back
behind it. The publisher remembers the marks of its own publishes (Redis' state
after them) for the rest of its leadership. A control (an event of channel
CONTROL_MARKER, listener/control.py) is one ``control.lua`` call placed in the batch
by outbox id (the runs, segments and reply parsing: listener/batches.py). Knows redis,
not asyncpg. Connection errors propagate: the caller keeps its outbox rows and
retries, and the scripts' de-duplication makes the retry harmless.

On a Redis Cluster (``layout.sharded``) the names come from the :class:`Layout`: each
run checks its partition's fence copy and ``SPUBLISH``es; the pipeline sends each run to
the master of its partition's slot (in order per node, so per channel), and the nodes
answer concurrently, so a batch with controls is sent in segments, one round trip per
control: the events before it, the control, the events after it. ``WAIT`` is asked of
every master that took a write. A new master (failover) lacks the scripts: NOSCRIPT loads
them on every primary and the batch is sent again (what had run is de-duplicated).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from listener.batches import (
    RUN_MAX,
    Event,
    Mark,
    PublishResult,
    RunReply,
    _segments,
    parse_control_result,
    parse_result,
    runs,
)
from listener.scripts import (
    CLAIM_SCRIPT,
    CLAIM_SHA,
    CONTROL_SCRIPT,
    CONTROL_SHA,
    PUBLISH_SCRIPT,
    PUBLISH_SHA,
)
from pgcast import redis_connect
from pgcast.keys import (
    CONTROL_MARKER,
    CONTROL_STREAM_MAXLEN,
    Layout,
    channel_json,
)

# The batch's names (listener/batches.py) stay importable from here.
__all__ = ["RUN_MAX", "Event", "Mark", "PublishResult", "Publisher", "ReplicasBehindError"]
__all__ += ["RunReply", "_segments", "parse_result", "runs"]
__all__ += ["CONTROL_SHA", "PUBLISH_SCRIPT", "PUBLISH_SHA"]

ReplicaPolicy = Literal["stall", "degrade"]

# Marks remembered from this leadership's own publishes; past it they are forgotten
# (Postgres' pgcast.watermark has them, at most one batch older).
KNOWN_MAX = 100_000


class ReplicasBehindError(Exception):
    """Fewer replicas than required acknowledged a publish within the WAIT timeout."""

    def __init__(self, acked: int, wanted: int, timeout: float) -> None:
        super().__init__(
            f"{acked} of {wanted} Redis replicas acknowledged the publish within {timeout}s"
        )
        self.acked = acked


class Publisher:
    """Publishes batches of events for the leader with epoch ``leader_epoch``.

    ``min_replicas`` > 0 ends each batch with ``WAIT``; fewer acknowledgements than
    that within ``replica_timeout`` raise ReplicasBehindError (``stall``: the caller
    keeps its rows and retries) or are counted and accepted (``degrade``).
    ``on_behind(channel, had, mark)`` hears of every channel whose Redis state had
    gone back behind its watermark, or was renewed (a new epoch was started).
    """

    # The venv's types-redis stubs make Redis generic; redis' own inline types do not.
    # "unused-ignore" keeps the ignore valid under either.
    def __init__(
        self,
        redis: aioredis.Redis | RedisCluster,  # type: ignore[type-arg, unused-ignore]
        *,
        layout: Layout | None = None,
        history_size: int = 1000,
        history_ttl: int = 86400,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
        replica_policy: ReplicaPolicy = "stall",
        on_behind: Callable[[str, str, Mark | None], None] | None = None,
        on_replicas: Callable[[int, bool, bool], None] | None = None,
    ) -> None:
        self.redis: Any = redis
        self.layout = layout or Layout()
        self.sharded = self.layout.sharded
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout
        self.replica_policy = replica_policy
        self.on_behind = on_behind
        self.on_replicas = on_replicas
        self.known: dict[str, Mark] = {}

    def mark(self, channel: str) -> Mark | None:
        """Redis' state of ``channel`` after this publisher's last publish to it."""
        return self.known.get(channel)

    async def claim_fence(self, leader_epoch: int) -> bool:
        """Raise every fence copy to ``leader_epoch``; False when a newer leader already holds
        one. On a cluster the scripts are loaded on every primary first, and the partition
        count is written to the layout key for gateways to check."""
        if self.sharded:
            await self._load(PUBLISH_SCRIPT, CONTROL_SCRIPT, CLAIM_SCRIPT)
        try:
            claimed = await self._claim(leader_epoch)
        except NoScriptError:
            await self._load(CLAIM_SCRIPT)
            claimed = await self._claim(leader_epoch)
        layout_key = self.layout.layout_key()
        if claimed and layout_key is not None:
            await self.redis.set(layout_key, self.layout.partitions)
        return claimed

    async def _claim(self, leader_epoch: int) -> bool:
        fences = self.layout.fence_keys()
        if len(fences) == 1:
            return bool(int(await self.redis.evalsha(CLAIM_SHA, 1, fences[0], leader_epoch)))
        pipe = self.redis.pipeline(transaction=False)
        for key in fences:
            pipe.evalsha(CLAIM_SHA, 1, key, leader_epoch)
        return all(int(result) for result in await pipe.execute())

    async def load_script(self, script: str) -> None:
        """SCRIPT LOAD another script of the listener's (on every primary of a cluster)."""
        await self._load(script)

    async def _load(self, *scripts: str) -> None:
        """SCRIPT LOAD, on every primary of a cluster (a promoted replica has none)."""
        for script in scripts:
            if self.sharded:
                await self.redis.execute_command(
                    "SCRIPT LOAD", script, target_nodes=RedisCluster.PRIMARIES
                )
            else:
                await self.redis.script_load(script)

    async def identity(self) -> str | None:
        """Which Redis this is: its run id and replication id, both new after a restart or a
        failover (a cluster: every master's, sorted); None where INFO is not allowed (some
        managed Redis)."""
        if self.sharded:
            return await redis_connect.cluster_identity(self.redis)
        try:
            info = await self.redis.execute_command("INFO", "server", "replication")
        except ResponseError:
            return None
        run_id, replid = info.get("run_id"), info.get("master_replid")
        return f"{run_id}/{replid}" if run_id and replid else None

    async def publish(
        self,
        leader_epoch: int,
        events: Sequence[Event],
        watermarks: Mapping[str, Mark] | None = None,
        renew: Collection[str] = (),
    ) -> list[PublishResult]:
        """Publish ``events`` (in order per channel) in one round trip; a result per event.

        ``watermarks``: per channel, what Postgres recorded; this publisher's own later
        knowledge of a channel takes precedence. ``renew``: channels that start a new
        epoch whatever Redis holds.
        """
        if not events:
            return []
        indexes = runs(events)
        batch = [[events[i] for i in run] for run in indexes]
        expected, forced = self._expected(batch, watermarks or {}, renew)
        try:
            replies = await self._run(leader_epoch, batch, expected, forced)
        except NoScriptError:
            # Redis restarted or SCRIPT FLUSH: load once, run the whole batch again (one
            # Redis: the script failed for every run, so nothing was published; a cluster:
            # a new master lacked it, what other masters ran is de-duplicated).
            await self._load(PUBLISH_SCRIPT, *((CONTROL_SCRIPT,) if self.sharded else ()))
            replies = await self._run(leader_epoch, batch, expected, forced)
        if self.min_replicas:
            self._replicated(replies.pop())
        parsed = [
            parse_control_result(reply)
            if run[0].channel == CONTROL_MARKER
            else parse_result(reply, len(run))
            for reply, run in zip(replies, batch, strict=True)
        ]
        self._remember(batch, parsed, expected, forced)
        results: list[PublishResult | None] = [None] * len(events)
        for reply, run in zip(parsed, indexes, strict=True):
            for index, result in zip(run, reply.results, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    def _expected(
        self, batch: list[list[Event]], watermarks: Mapping[str, Mark], renew: Collection[str]
    ) -> tuple[list[Mark | None], list[bool]]:
        """Per run, the watermark it is checked against and whether it renews its channel's
        epoch: only a channel's first run (later runs of a channel continue from the first,
        in the same script order)."""
        seen: set[str] = set()
        expected: list[Mark | None] = []
        forced: list[bool] = []
        for run in batch:
            channel = run[0].channel
            if channel == CONTROL_MARKER:  # no watermark, no epoch
                expected.append(None)
                forced.append(False)
                continue
            first = channel not in seen
            seen.add(channel)
            expected.append(self.known.get(channel) or watermarks.get(channel) if first else None)
            forced.append(first and channel in renew)
        return expected, forced

    def _replicated(self, acked: Any) -> None:
        """WAIT's reply: stall (raise) or degrade (count) when too few replicas have it."""
        count = int(acked)
        short = count < self.min_replicas
        if self.on_replicas is not None:
            self.on_replicas(count, short, self.replica_policy == "degrade")
        if short and self.replica_policy == "stall":
            raise ReplicasBehindError(count, self.min_replicas, self.replica_timeout)

    def _remember(
        self,
        batch: list[list[Event]],
        parsed: list[RunReply],
        expected: list[Mark | None],
        forced: list[bool],
    ) -> None:
        if len(self.known) > KNOWN_MAX:
            self.known.clear()
        for run, reply, mark, force in zip(batch, parsed, expected, forced, strict=True):
            if reply.mark is None:
                continue  # fenced, or a control
            channel = run[0].channel
            self.known[channel] = reply.mark
            if reply.behind and self.on_behind is not None:
                self.on_behind(channel, reply.behind, None if force else mark)

    async def _run(
        self,
        leader_epoch: int,
        batch: list[list[Event]],
        expected: list[Mark | None],
        forced: list[bool],
    ) -> list[Any]:
        if self.sharded:
            return await self._run_sharded(leader_epoch, batch, expected, forced)
        if len(batch) == 1 and not self.min_replicas and batch[0][0].channel != CONTROL_MARKER:
            # One channel's run (at a few hundred events/s, nearly every batch): one command,
            # not a pipeline, whose bookkeeping was most of a lone event's cost.
            args = self._args(leader_epoch, batch[0], expected[0], forced[0], self._keep(batch))
            return [await self.redis.evalsha(PUBLISH_SHA, 4, *args)]
        pipe = self.redis.pipeline(transaction=False)
        controls = any(run[0].channel == CONTROL_MARKER for run in batch)
        if controls:
            # Both scripts loaded first: a NOSCRIPT of one call would retry the batch after
            # the others ran, and a control could then reach Redis before an event before it.
            pipe.script_load(PUBLISH_SCRIPT)
            pipe.script_load(CONTROL_SCRIPT)
        self._queue(pipe, leader_epoch, batch, expected, forced, keep=self._keep(batch))
        if self.min_replicas:
            # The same round trip: WAIT answers once the replicas have every write above.
            pipe.execute_command("WAIT", self.min_replicas, int(self.replica_timeout * 1000))
        replies: list[Any] = await pipe.execute()
        return replies[2:] if controls else replies

    async def _run_sharded(
        self,
        leader_epoch: int,
        batch: list[list[Event]],
        expected: list[Mark | None],
        forced: list[bool],
    ) -> list[Any]:
        """The cluster's round trips: the masters run their parts concurrently, so each
        control is a segment of its own, after the events before it have been answered."""
        keep = self._keep(batch)
        replies: list[Any] = []
        for start, stop in _segments(batch):
            pipe = self.redis.pipeline(transaction=False)
            part = slice(start, stop)
            self._queue(pipe, leader_epoch, batch[part], expected[part], forced[part], keep)
            replies += await pipe.execute()
        if self.min_replicas:
            replies.append(await self._wait_sharded(batch))
        return replies

    async def _wait_sharded(self, batch: list[list[Event]]) -> int:
        """WAIT on every master that took a write of ``batch`` (where the slot map says its
        keys live now, after any MOVED it followed); the fewest acknowledgements count."""
        keys = {
            self.layout.control_fence_key()
            if run[0].channel == CONTROL_MARKER
            else self.layout.fence_key(run[0].channel)
            for run in batch
        }
        nodes = {node.name: node for key in keys if (node := self.redis.get_node_from_key(key))}
        timeout_ms = int(self.replica_timeout * 1000)
        acked = await asyncio.gather(
            *(
                self.redis.execute_command("WAIT", self.min_replicas, timeout_ms, target_nodes=node)
                for node in nodes.values()
            )
        )
        return min(int(count) for count in acked)

    def _keep(self, batch: list[list[Event]]) -> int:
        return max(self.history_size, sum(len(run) for run in batch), 1000)

    def _queue(
        self,
        pipe: Any,
        leader_epoch: int,
        batch: list[list[Event]],
        expected: list[Mark | None],
        forced: list[bool],
        keep: int,
    ) -> None:
        """One EVALSHA per run (or control) of ``batch`` on ``pipe``, in order."""
        for run, mark, force in zip(batch, expected, forced, strict=True):
            if run[0].channel == CONTROL_MARKER:
                self._control(pipe, leader_epoch, run[0])
                continue
            pipe.evalsha(PUBLISH_SHA, 4, *self._args(leader_epoch, run, mark, force, keep))

    def _args(
        self, leader_epoch: int, run: list[Event], mark: Mark | None, force: bool, keep: int
    ) -> list[str | int | bytes]:
        """publish.lua's keys and arguments for one run of a channel's events."""
        layout = self.layout
        channel = run[0].channel
        keys = layout.channel_keys(channel)
        return [
            keys.meta,
            keys.history,
            keys.ids,
            layout.fence_key(channel),
            leader_epoch,
            # The epoch, should this run start a new history: unique, not secret.
            f"{random.getrandbits(64):016x}",
            channel_json(channel),
            self.history_size,
            self.history_ttl,
            keys.live,
            keep,
            ",".join(
                f"{'' if e.dedupe_id is None else e.dedupe_id}:{len(e.data_json)}" for e in run
            ),
            b"".join(event.data_json for event in run),
            "" if mark is None else mark.epoch,
            0 if mark is None else mark.top,
            "1" if force else "",
            layout.publish_command,
        ]

    def _control(self, pipe: Any, leader_epoch: int, control: Event) -> None:
        if control.dedupe_id is None:
            raise ValueError("a control is published with its outbox id")
        stream, ids, live = self.layout.control_keys()
        pipe.evalsha(
            CONTROL_SHA,
            3,
            self.layout.control_fence_key(),
            stream,
            ids,
            leader_epoch,
            control.dedupe_id,
            control.data_json,
            CONTROL_STREAM_MAXLEN,
            live,
            self.layout.publish_command,
        )
