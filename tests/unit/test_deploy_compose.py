"""docker-compose.yml, offline: valid against the Compose Specification, and true to the code."""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest
import yaml

from pgcast.keys import DEFAULT_PARTITIONS
from pgcast.redis_url import parse_redis_url
from tests.unit.test_deploy_facts import (
    ROOT,
    TOOL_VARS,
    console_scripts,
    gateway_env,
    gunicorn_settings,
    listener_env,
    migrate_env,
    routes,
)

SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
OURS = ("migrate", "tls", "listener", "gateway")
DEFAULT_SERVICES = {"postgres", "redis", "migrate", "tls", "listener", "gateway", "nginx"}
SENTINEL_SERVICES = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
SENTINEL_URL = "redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/pgcast/0"
CLUSTER_NODES = {f"redis-cluster-{n}" for n in range(1, 7)}
CLUSTER_SERVICES = CLUSTER_NODES | {"redis-cluster-create"}
CLUSTER_URL = "redis+cluster://" + ",".join(f"redis-cluster-{n}:6379" for n in range(1, 7))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    """The file validates against the vendored Compose Specification JSON schema."""
    validate(compose)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "gateway", "restrat"), "always"),
        (("services", "listener", "deploy", "replicas"), {"count": 2}),
        (("services", "gateway", "healthcheck", "intervall"), "5s"),
        (("services", "nginx", "depends_on", "gateway", "condition"), "service_happy"),
        (("services", "sentinel-1", "profiles"), "sentinel"),
        (("services", "redis-replica", "depends_on", "redis", "condition"), "healthy"),
        (("services", "redis-cluster-2", "profiles"), "cluster"),
        (("services", "redis-cluster-create", "restart"), False),
    ],
)
def test_schema_rejects_a_broken_file(
    compose: dict[str, Any], path: tuple[str, ...], value: object
) -> None:
    """The schema check has teeth: a wrong type, key or condition fails it."""
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_gateway_can_be_scaled(compose: dict[str, Any]) -> None:
    """No host port and no container name: `--scale gateway=4` cannot collide."""
    gateway = compose["services"]["gateway"]
    assert "ports" not in gateway
    assert "container_name" not in gateway
    assert "deploy" not in gateway or "replicas" not in gateway["deploy"]


def test_topology(compose: dict[str, Any]) -> None:
    """Postgres, Redis, a one-shot migrate, 2 listeners, gateways, nginx on 8443; the
    rest only with the `sentinel` profile."""
    services = compose["services"]
    assert {n for n, svc in services.items() if not svc.get("profiles")} == DEFAULT_SERVICES
    assert services["listener"]["deploy"]["replicas"] == 2
    assert services["migrate"]["restart"] == "no"
    assert any(p.endswith(":8443") for p in services["nginx"]["ports"])


def test_start_order_waits_on_health_and_completion(compose: dict[str, Any]) -> None:
    """depends_on uses conditions: healthy servers, migrations and certs completed."""
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    listener = services["listener"]["depends_on"]
    assert listener["migrate"]["condition"] == "service_completed_successfully"
    assert listener["redis"]["condition"] == "service_healthy"
    nginx = services["nginx"]["depends_on"]
    assert nginx["tls"]["condition"] == "service_completed_successfully"
    assert nginx["gateway"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "listener", "gateway", "nginx"):
        assert "test" in services[name]["healthcheck"], name


@pytest.mark.parametrize(
    ("service", "readers"),
    [("migrate", migrate_env), ("listener", listener_env), ("gateway", gateway_env)],
)
def test_every_variable_is_one_the_code_reads(
    compose: dict[str, Any], service: str, readers: Any
) -> None:
    """Each variable a pgcast service gets is read by that process (no typo, no stray)."""
    given = set(compose["services"][service]["environment"])
    assert given - readers() - TOOL_VARS == set()


def test_secrets_come_from_the_env_file(compose: dict[str, Any]) -> None:
    """Secrets are interpolated from .env (documented in .env.example), never literal."""
    example = (ROOT / ".env.example").read_text()
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("POSTGRES_PASSWORD", "PGCAST_JWT_SECRET"):
        assert re.search(rf"^{name}=", example, re.M), name
        assert f"${{{name}:?" in text, name
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", text))
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert interpolated <= documented


def test_probes_use_paths_and_ports_the_code_serves(compose: dict[str, Any]) -> None:
    """Healthchecks hit /readyz and /healthz on the ports the services are given."""
    services = compose["services"]
    gateway_probe = " ".join(services["gateway"]["healthcheck"]["test"])
    listener_probe = " ".join(services["listener"]["healthcheck"]["test"])
    port = services["gateway"]["environment"]["PGCAST_PORT"]
    assert f"127.0.0.1:{port}/readyz" in gateway_probe
    assert "/readyz" in routes("gateway/*.py")
    lport = services["listener"]["environment"]["PGCAST_LISTENER_PORT"]
    assert f"127.0.0.1:{lport}/healthz" in listener_probe
    assert "/healthz" in routes("listener/*.py")
    assert f"http://gateway:{port}" in (ROOT / "deploy" / "nginx" / "compose.conf").read_text()


def test_commands_are_real_console_scripts(compose: dict[str, Any]) -> None:
    """Each pgcast service runs a declared console script, gunicorn, or a shipped module."""
    scripts = console_scripts()
    for name in OURS:
        argv = compose["services"][name]["command"]
        if argv[0] == "gunicorn":
            assert argv[-1] == "gateway.app:gunicorn_app"
        elif argv[0] == "python":
            assert argv[1:3] == ["-m", "deploy.certs"]
        else:
            assert argv[0] in scripts, argv


def test_grace_period_covers_the_gateway_drain(compose: dict[str, Any]) -> None:
    """Compose waits longer than gunicorn's graceful timeout, which covers the drain."""
    gateway = compose["services"]["gateway"]
    settings = gunicorn_settings({k: str(v) for k, v in gateway["environment"].items()})
    drain = float(gateway["environment"]["PGCAST_DRAIN_SECONDS"])
    assert settings["graceful_timeout"] > drain
    assert int(gateway["stop_grace_period"].rstrip("s")) > settings["graceful_timeout"]


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's ``${NAME:-default}`` / ``${NAME}`` for the values these tests read."""

    def one(match: re.Match[str]) -> str:
        return env.get(match["name"]) or (match["default"] or "")

    return re.sub(r"\$\{(?P<name>[A-Z_]+)(?::-(?P<default>[^}]*))?\}", one, text)


def test_sentinel_profile_adds_a_replica_and_three_sentinels(compose: dict[str, Any]) -> None:
    """Profile `sentinel`: a replica of `redis` and 3 Sentinels monitoring it as master
    'pgcast' with quorum 2; nothing of it starts without the profile."""
    services = compose["services"]
    profiled = {n for n, svc in services.items() if "sentinel" in svc.get("profiles", [])}
    assert profiled == SENTINEL_SERVICES
    every = {n for n, svc in services.items() if svc.get("profiles")}
    assert every == SENTINEL_SERVICES | CLUSTER_SERVICES
    for name in SENTINEL_SERVICES:
        svc = services[name]
        assert svc["profiles"] == ["sentinel"], name
        assert svc["image"] == services["redis"]["image"], name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert "test" in svc["healthcheck"], name
        assert "ports" not in svc, name  # reached only inside the compose network
    replica = services["redis-replica"]["command"]
    assert replica[0] == "redis-server"
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert replica[replica.index("--replica-announce-ip") + 1] == "redis-replica"


def sentinel_script(svc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The config lines a Sentinel service writes, and the command it then execs."""
    shell, flag, script = svc["command"]
    assert (shell, flag) == ("sh", "-c")
    write, _, run = script.partition(";")
    words = shlex.split(write)
    assert words[:4] == ["[", "-f", "/data/sentinel.conf", "]"]  # written only when missing
    assert words[4:7] == ["||", "printf", "%s\\n"]
    assert words[-2:] == [">", "/data/sentinel.conf"]
    return words[7:-2], shlex.split(run)


@pytest.mark.parametrize("name", ["sentinel-1", "sentinel-2", "sentinel-3"])
def test_each_sentinel_writes_a_config_it_may_rewrite(compose: dict[str, Any], name: str) -> None:
    """Each Sentinel writes its config into /data once (Sentinel rewrites it), monitors
    master 'pgcast' at redis:6379 by name, and execs redis-server --sentinel through the
    image's entrypoint (which drops root)."""
    lines, run = sentinel_script(compose["services"][name])
    assert run == [
        "exec",
        "docker-entrypoint.sh",
        "redis-server",
        "/data/sentinel.conf",
        "--sentinel",
    ]
    assert "port 26379" in lines
    assert "sentinel resolve-hostnames yes" in lines
    assert "sentinel monitor pgcast redis 6379 2" in lines
    assert any(line.startswith("sentinel down-after-milliseconds pgcast ") for line in lines)
    assert "$" not in " ".join(lines)  # nothing for Compose to interpolate


def test_listener_and_gateway_redis_url_default_and_sentinel(compose: dict[str, Any]) -> None:
    """Both get REDIS_URL from PGCAST_COMPOSE_REDIS_URL, `redis` by default; the URL the
    file documents for the profile names every Sentinel service and parses."""
    given = {compose["services"][n]["environment"]["REDIS_URL"] for n in ("listener", "gateway")}
    (url,) = given
    assert url.startswith("${PGCAST_COMPOSE_REDIS_URL:-")
    assert interpolate(url, {}) == "redis://redis:6379/0"
    assert interpolate(url, {"PGCAST_COMPOSE_REDIS_URL": SENTINEL_URL}) == SENTINEL_URL
    text = (ROOT / "docker-compose.yml").read_text()
    assert f"PGCAST_COMPOSE_REDIS_URL={SENTINEL_URL}" in text
    assert "COMPOSE_PROFILES=sentinel" in text
    target = parse_redis_url(SENTINEL_URL)
    assert target.master == "pgcast"
    assert {host for host, _ in target.sentinels} == SENTINEL_SERVICES - {"redis-replica"}
    assert {port for _, port in target.sentinels} == {26379}


def test_cluster_profile_adds_six_nodes_and_a_one_shot_create(compose: dict[str, Any]) -> None:
    """Profile `cluster`: six redis:7 nodes in cluster mode, each with its own volume
    (nodes.conf and the append-only file survive restarts), reached only inside the
    compose network; a one-shot joins them once all are healthy."""
    services = compose["services"]
    profiled = {n for n, svc in services.items() if "cluster" in svc.get("profiles", [])}
    assert profiled == CLUSTER_SERVICES
    volumes = set()
    for name in CLUSTER_SERVICES:
        svc = services[name]
        assert svc["profiles"] == ["cluster"], name
        assert svc["image"] == "redis:7", name  # Debian-based: getent for the one-shot
        assert "ports" not in svc, name
    for name in CLUSTER_NODES:
        svc = services[name]
        argv = svc["command"]
        assert argv[0] == "redis-server"
        options = dict(zip(argv[1::2], argv[2::2], strict=True))
        assert options["--cluster-enabled"] == "yes"
        assert options["--cluster-config-file"] == "nodes.conf"
        assert int(options["--cluster-node-timeout"]) > 0
        assert options["--appendonly"] == "yes"
        assert "test" in svc["healthcheck"], name
        assert svc["restart"] == "unless-stopped"
        ((volume, path),) = (v.split(":") for v in svc["volumes"])
        assert path == "/data"
        assert volume in compose["volumes"]
        volumes.add(volume)
    assert len(volumes) == len(CLUSTER_NODES)
    create = services["redis-cluster-create"]
    assert create["restart"] == "no"
    assert {n: d["condition"] for n, d in create["depends_on"].items()} == dict.fromkeys(
        CLUSTER_NODES, "service_healthy"
    )


def test_cluster_create_script(compose: dict[str, Any]) -> None:
    """The one-shot runs redis-cli --cluster create with every node, one replica per
    master, no prompt, then waits for cluster_state:ok; a node that already knows others
    means the cluster exists (exit 0, untouched). `$$` keeps Compose from interpolating
    the shell's variables (tests/integration/test_compose_cluster.py runs the script)."""
    shell, flag, script = compose["services"]["redis-cluster-create"]["command"]
    assert (shell, flag) == ("sh", "-c")
    assert "redis-cli --cluster create $$nodes --cluster-replicas 1 --cluster-yes" in script
    assert "for n in 1 2 3 4 5 6;" in script
    assert "grep -q '^cluster_state:ok'" in script
    assert 'if [ "$$known" != 1 ]; then' in script
    assert re.search(r"(?<!\$)\$(?!\$)", script.replace("$$", "")) is None


def test_listener_and_gateway_reach_the_cluster(compose: dict[str, Any]) -> None:
    """The cluster URL the file documents names every node and parses as a cluster; the
    listener and the gateways get PGCAST_REDIS_PARTITIONS from one variable (they must
    agree), 64 by default as in the code."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert f"PGCAST_COMPOSE_REDIS_URL={CLUSTER_URL}" in text
    assert "COMPOSE_PROFILES=cluster" in text
    target = parse_redis_url(CLUSTER_URL)
    assert target.kind == "cluster"
    assert {host for host, _ in target.nodes} == CLUSTER_NODES
    given = {
        compose["services"][n]["environment"]["PGCAST_REDIS_PARTITIONS"]
        for n in ("listener", "gateway")
    }
    assert given == {"${PGCAST_REDIS_PARTITIONS:-64}"}
    assert interpolate(given.pop(), {}) == str(DEFAULT_PARTITIONS)
    example = (ROOT / ".env.example").read_text()
    assert f"PGCAST_COMPOSE_REDIS_URL={CLUSTER_URL}" in example
