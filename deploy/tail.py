"""``python -m deploy.tail CHANNEL...``: print a channel's messages, through the stack's wss.

A ready-made client for the running stack (``make up``): it trusts the stack's
development CA, mints a dev token from the stack's secret unless ``--token`` is
given, and uses pgcast_client, so it reconnects and resumes like any client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

from deploy.config import REPO
from deploy.procs import script
from pgcast_client import Client, Gap


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.tail", description=__doc__)
    p.add_argument("channels", nargs="+", metavar="CHANNEL")
    p.add_argument("--url", default="wss://localhost:8443/ws")
    p.add_argument("--token", help="a connection token (default: a dev token for every channel)")
    p.add_argument("--run-dir", type=Path, default=REPO / ".run")
    p.add_argument("--count", type=int, default=0, help="exit after this many messages")
    return p.parse_args(argv)


def dev_token(run_dir: Path) -> str:
    """A token signed with the stack's dev secret (the runner made it on first start)."""
    secret_file = run_dir / "jwt-secret"
    if not secret_file.exists():
        raise SystemExit(f"no {secret_file}: start the stack first (make up), or pass --token")
    env = {**os.environ, "PGCAST_JWT_SECRET": secret_file.read_text().strip()}
    argv = [script("pgcast-token"), "--sub", "dev", "--channels", "*", "--ttl", "3600"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def tls_context(run_dir: Path) -> ssl.SSLContext:
    ca = run_dir / "tls" / "ca.pem"
    return ssl.create_default_context(cafile=str(ca) if ca.exists() else None)


async def tail(args: argparse.Namespace) -> None:
    token = args.token or dev_token(args.run_dir)
    connector = aiohttp.TCPConnector(ssl=tls_context(args.run_dir))
    remaining = args.count or -1
    done = asyncio.Event()

    def on_gap(gap: Gap) -> None:
        print(f"{gap.channel}: continuity lost (epoch {gap.epoch}); refetch state", flush=True)  # noqa: T201

    async def follow(client: Client, channel: str) -> None:
        nonlocal remaining
        async for msg in client.channel(channel, on_gap=on_gap):
            data = orjson.dumps(msg.data).decode()
            print(f"{msg.channel} @{msg.offset} {data}", flush=True)  # noqa: T201
            remaining -= 1
            if remaining == 0:
                done.set()

    async with (
        aiohttp.ClientSession(connector=connector) as session,
        Client(args.url, token=token, session=session) as client,
    ):
        print(f"listening on {', '.join(args.channels)} at {args.url} (Ctrl-C stops)")  # noqa: T201
        tasks = [asyncio.create_task(follow(client, c)) for c in args.channels]
        try:
            await done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
