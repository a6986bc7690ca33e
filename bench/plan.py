"""What one benchmark run measures: the scenario matrix, full and ``--quick``.

Full (``make bench``): saturation (1,000 clients, 500 events/s on one channel,
one server process) for throughput and CPU per delivery; 5,000 connections on
one channel, pgcast against the ceiling; moderate latency on 2 server processes
(20 events/s to 1,000 clients; 1,000 events/s over 1,000 per-user channels and 200
events/s over 2,000; pgcast in both capture modes);
compression on; idle capacity at 10,000 connections; failover; write path.
Quick: the same shapes with small N and seconds, for a smoke run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.delivery import DeliverySpec

PEERS = ("python-socketio", "node-socketio")


@dataclass(frozen=True)
class Plan:
    deliveries: list[tuple[str, DeliverySpec]] = field(default_factory=list)
    idle_clients: int = 0
    failover: dict[str, float] = field(default_factory=dict)
    writepath: dict[str, float] = field(default_factory=dict)


def full_plan() -> Plan:
    sat = DeliverySpec("broadcast", "saturation", 1000, 500, 6, procs=1)
    fan = DeliverySpec("broadcast", "fanout-5k", 5000, 500, 6, procs=1, loadgens=1)
    mod = DeliverySpec("broadcast", "moderate", 1000, 20, 10, procs=2)
    mod_z = DeliverySpec("broadcast", "moderate", 1000, 20, 10, procs=2, compression=True)
    sat_z = DeliverySpec("broadcast", "saturation", 1000, 500, 6, procs=1, compression=True)
    per = DeliverySpec("per_user", "moderate", 1000, 1000, 10, procs=2)
    runs: list[tuple[str, DeliverySpec]] = [("ceiling", sat), ("pgcast", sat)]
    runs += [(peer, sat) for peer in PEERS]
    runs += [("ceiling", fan), ("pgcast", fan)]
    # The ceiling at the moderate levels: the latency floor of fan-out + clients on this box.
    runs += [("ceiling", mod), ("pgcast", mod), *((peer, mod) for peer in PEERS), ("pgcast", mod_z)]
    runs += [("pgcast", sat_z)]
    runs += [("ceiling", per), ("pgcast", per), *((peer, per) for peer in PEERS)]
    # Issue 15's second point: 2,000 user channels at 200 events/s; both capture modes.
    per200 = DeliverySpec("per_user", "moderate-200", 2000, 200, 10, procs=2)
    runs += [("pgcast-wal", mod), ("pgcast-wal", per), ("pgcast", per200), ("pgcast-wal", per200)]
    runs += [(peer, per200) for peer in PEERS]
    return Plan(
        deliveries=runs,
        idle_clients=10_000,
        failover={"clients": 200, "rate": 200, "seconds": 8, "kill_at": 3},
        writepath={"clients": 64, "seconds": 8, "rounds": 3},
    )


def quick_plan() -> Plan:
    sat = DeliverySpec("broadcast", "saturation", 200, 200, 3, procs=1, drain_timeout=5)
    mod = DeliverySpec("broadcast", "moderate", 200, 20, 3, procs=2, drain_timeout=5)
    per = DeliverySpec("per_user", "moderate", 200, 200, 3, procs=2, drain_timeout=5)
    runs: list[tuple[str, DeliverySpec]] = [("ceiling", sat), ("pgcast", sat)]
    runs += [(peer, sat) for peer in PEERS]
    runs += [("pgcast", mod), ("pgcast", per)]
    runs += [("pgcast", DeliverySpec("broadcast", "saturation", 200, 200, 3, compression=True))]
    return Plan(
        deliveries=runs,
        idle_clients=1000,
        failover={"clients": 50, "rate": 100, "seconds": 4, "kill_at": 1.5},
        writepath={"clients": 16, "seconds": 2, "rounds": 1},
    )


def select(plan: Plan, systems: set[str] | None, scenarios: set[str] | None) -> Plan:
    """Keep only the named systems and scenarios (``broadcast``, ``per_user``, ``idle``, ...)."""

    def keep(name: str, wanted: set[str] | None) -> bool:
        return wanted is None or name in wanted

    runs = [
        (s, spec)
        for s, spec in plan.deliveries
        if keep(s, systems) and (keep(spec.scenario, scenarios) or keep(spec.key, scenarios))
    ]
    pgcast_ok = keep("pgcast", systems)
    return Plan(
        deliveries=runs,
        idle_clients=plan.idle_clients if pgcast_ok and keep("idle", scenarios) else 0,
        failover=plan.failover if pgcast_ok and keep("failover", scenarios) else {},
        writepath=plan.writepath if pgcast_ok and keep("writepath", scenarios) else {},
    )
