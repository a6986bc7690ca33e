"""docker-compose.yml's `cluster` profile, without Docker: its node command and its
one-shot ``redis-cluster-create`` script, run for real against six local redis-servers.

Each node runs the compose file's own ``redis-server`` arguments on its own loopback
address, which it also connects out from (127.0.0.N stands for ``redis-cluster-N``,
all on one port, as the containers are); the one-shot's ``sh -c`` script runs as
Compose would hand it over (``$$`` is ``$``), with only name resolution stubbed
(``getent hosts redis-cluster-N`` answers 127.0.0.N, ``-h redis-cluster-1`` is
127.0.0.1). It creates 3 masters + 3 replicas and waits for cluster_state:ok; run
again, it leaves the cluster alone and exits 0.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.servers import NoServerError
from tests.unit.test_deploy_facts import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

NODES = 6
BUS = 10000
RESOLVE = 'getent() { echo "127.0.0.${2#redis-cluster-}  $2"; }; '


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_on_every_node() -> int:
    """A port free on 127.0.0.1..6, its bus port (+10000) too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + BUS < 65536 and all(
            bindable(f"127.0.0.{n}", p) for n in range(1, NODES + 1) for p in (port, port + BUS)
        ):
            return port
    raise RuntimeError("no port free on 127.0.0.1-6 with its bus port")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[int]:
    """Six redis-servers with the compose node command, on 127.0.0.1..6; their port."""
    server = shutil.which("redis-server")
    if server is None or shutil.which("redis-cli") is None:
        # Like every Redis test here: a missing binary is a failure, never a silent skip.
        raise NoServerError("needs redis-server and redis-cli (Debian: redis-server, redis-tools)")
    argv = compose_services()["redis-cluster-1"]["command"]
    assert argv[0] == "redis-server"
    port = free_port_on_every_node()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(1, NODES + 1):
            home = tmp_path / f"node-{n}"
            home.mkdir()
            # Its own address, as a container has: listens and connects out from it.
            host = f"127.0.0.{n}"
            local = ["--port", str(port), "--bind", host, "--bind-source-addr", host]
            local += ["--dir", str(home)]
            local += ["--logfile", str(home / "redis.log")]
            procs.append(subprocess.Popen([server, *argv[1:], *local]))
        for n in range(1, NODES + 1):
            client = redis.Redis(host=f"127.0.0.{n}", port=port, socket_timeout=2)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    subprocess.run(["sleep", "0.05"], check=True)  # the node is starting
            client.close()
        yield port
    finally:
        for proc in procs:
            proc.kill()  # by PID: the nodes started here
            proc.wait(10)


def create_script(port: int) -> str:
    """The one-shot's script as its shell receives it, names resolved to 127.0.0.N."""
    service = compose_services()["redis-cluster-create"]
    shell, flag, script = service["command"]
    assert (shell, flag) == ("sh", "-c")
    script = script.replace("$$", "$").replace("-h redis-cluster-1", "-h 127.0.0.1")
    return RESOLVE + script.replace("6379", str(port))


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_one_shot_creates_the_cluster_once(nodes: int) -> None:
    """3 masters + 3 replicas, every node cluster_state:ok; a second run exits 0 and
    changes nothing."""
    script = create_script(nodes)
    first = run(script)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.rstrip().endswith("cluster_state:ok")
    roles = []
    for n in range(1, NODES + 1):
        client = redis.Redis(host=f"127.0.0.{n}", port=nodes, decode_responses=True)
        info = str(client.execute_command("CLUSTER", "INFO"))
        assert "cluster_state:ok" in info, (n, info)
        roles.append(client.execute_command("ROLE")[0])
        client.close()
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    second = run(script)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "the cluster exists (6 nodes)" in second.stdout


def test_the_one_shot_fails_while_no_node_answers() -> None:
    """Nothing on redis-cluster-1: exit 1 saying so (Compose shows the container failed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    done = run(create_script(closed))
    assert done.returncode == 1
    assert "redis-cluster-1 does not answer" in done.stdout
