"""bench/cluster.py's part 3: PUBLISH against SPUBLISH on the cluster bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench.cluster_redis import Topology, start_cluster
from bench.cluster_rig import PARTITIONS, log
from pgcast.keys import Layout


# -- 3. PUBLISH against SPUBLISH on the bus -------------------------------------------------------
async def bus_part(messages: int, channels: int) -> dict[str, Any]:
    topology = await asyncio.to_thread(start_cluster, 1)
    try:
        layout = Layout(PARTITIONS)
        names = [layout.live_channel(f"user:{i}") for i in range(channels)]
        owner = await slot_owners(topology)
        by_master: dict[int, list[str]] = {}
        for k in range(messages):
            name = names[k % channels]
            by_master.setdefault(owner(name), []).append(name)
        payload = b"1:0123456789abcdef:" + b"x" * 81  # 100 bytes, a live payload's shape
        result: dict[str, Any] = {
            "messages": messages,
            "channels": channels,
            "nodes": [{"role": n.role, "port": n.port} for n in topology.nodes],
        }
        for command in ("PUBLISH", "SPUBLISH", "PUBLISH"):
            await asyncio.sleep(0.5)
            cpu0, bus0, t0 = await topology.cpu(), await topology.bus(), time.monotonic()
            for port, targets in by_master.items():
                client = topology.client(port)
                for at in range(0, len(targets), 200):
                    pipe = client.pipeline(transaction=False)
                    for name in targets[at : at + 200]:
                        pipe.execute_command(command, name, payload)
                    await pipe.execute()
            await asyncio.sleep(1.0)  # let the bus carry what was queued
            seconds = time.monotonic() - t0
            cpu1, bus1 = await topology.cpu(), await topology.bus()
            rows: list[dict[str, Any]] = []
            for node in topology.nodes:
                before, after = bus0[node.port], bus1[node.port]

                def delta(key: str, a: dict[str, int] = before, b: dict[str, int] = after) -> int:
                    return b.get(key, 0) - a.get(key, 0)

                rows.append(
                    {
                        "role": node.role,
                        "port": node.port,
                        "sent": delta("sent"),
                        "received": delta("received"),
                        "publish_sent": delta("publish_sent"),
                        "publish_received": delta("publish_received"),
                        "publishshard_sent": delta("publishshard_sent"),
                        "publishshard_received": delta("publishshard_received"),
                        "cpu_us_per_message": round(
                            (cpu1[node.port] - cpu0[node.port]) * 1e6 / messages, 2
                        ),
                    }
                )
            key = command.lower() if command.lower() not in result else command.lower() + "_again"
            sent = sum(int(r["sent"]) for r in rows)
            received = sum(int(r["received"]) for r in rows)
            cpu = sum(float(r["cpu_us_per_message"]) for r in rows)
            result[key] = {
                "seconds": round(seconds, 2),
                "nodes": rows,
                "bus_sent_per_message": round(sent / messages, 3),
                "bus_received_per_message": round(received / messages, 3),
                "cpu_us_per_message_all_nodes": round(cpu, 2),
            }
            result.setdefault("order", []).append(key)
            log(f"bus: {command}: {result[key]['bus_sent_per_message']} bus messages sent each")
        return result
    finally:
        await topology.close()
        topology.destroy()


async def slot_owners(topology: Topology) -> Callable[[str], int]:
    """channel -> port of the master serving its slot (CLUSTER SLOTS of the first node)."""
    from redis.crc import key_slot

    client = topology.client(topology.nodes[0].port)
    reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call, unused-ignore]
    ranges: list[tuple[int, int, int]] = []
    if isinstance(reply, dict):  # redis-py parses it: {(first, last): {"primary": (host, port)}}
        for (first, last), info in reply.items():
            ranges.append((int(first), int(last), int(info["primary"][1])))
    else:
        for entry in reply:
            ranges.append((int(entry[0]), int(entry[1]), int(entry[2][1])))

    def owner(name: str) -> int:
        slot = key_slot(name.encode())
        for first, last, port in ranges:
            if first <= slot <= last:
                return port
        raise LookupError(f"no master serves slot {slot}")

    return owner
