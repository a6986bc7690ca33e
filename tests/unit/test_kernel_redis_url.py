"""The REDIS_URL grammar of a Redis Cluster, and the key layout each target gets."""

from __future__ import annotations

import pytest

from listener.config import load_settings
from pgcast.keys import DEFAULT_PARTITIONS, FENCE_KEY, Layout, key_slot
from pgcast.redis_url import layout_for, parse_redis_url
from pgcast.settings import ConfigError


def test_cluster_url_names_its_startup_nodes_and_credentials() -> None:
    """``redis+cluster://user:pw@h1:7000,h2:7001`` -> kind cluster, both nodes, the password."""
    target = parse_redis_url("redis+cluster://app:s%40cret@h1:7000,h2:7001,[::1]:7002")
    assert target.kind == "cluster"
    assert target.cluster
    assert target.nodes == (("h1", 7000), ("h2", 7001), ("::1", 7002))
    assert (target.username, target.password) == ("app", "s@cret")
    assert "s@cret" not in repr(target)
    assert "s@cret" not in target.describe()
    assert target.describe() == "Redis Cluster via h1:7000,h2:7001,::1:7002"


def test_cluster_url_without_port_or_credentials() -> None:
    """A node without a port is on 6379; ``:password@`` alone sets no username."""
    target = parse_redis_url("redis+cluster://:pw@node-a,node-b:7001/")
    assert target.nodes == (("node-a", 6379), ("node-b", 7001))
    assert (target.username, target.password) == (None, "pw")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "is not a host[:port]"),
        ("redis+cluster://h1:7000,,h2:7001", "is not a host[:port]"),
        ("redis+cluster://h1:port", "has no valid port"),
        ("redis+cluster://h1:70000", "has no valid port"),
        ("redis+cluster://h1:7000/0", "has no path"),
        ("redis+cluster://h1:7000?password=x", "unknown option 'password'"),
    ],
)
def test_malformed_cluster_url_is_one_line(url: str, says: str) -> None:
    """A malformed cluster URL is a one-line ConfigError naming the variable."""
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(url)
    message = str(caught.value)
    assert says in message
    assert message.startswith("REDIS_URL")
    assert "\n" not in message


def test_unknown_scheme_names_the_cluster_scheme() -> None:
    with pytest.raises(ConfigError, match=r"redis\+cluster://"):
        parse_redis_url("memcached://h1:11211")


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "unix:///tmp/redis.sock", "redis+sentinel://s1/m"]
)
def test_one_redis_keeps_the_classic_layout(url: str) -> None:
    """One Redis or Sentinel: Layout() whatever PGCAST_REDIS_PARTITIONS says."""
    layout = layout_for(parse_redis_url(url), 128)
    assert layout == Layout()
    assert layout.fence_keys() == (FENCE_KEY,)
    assert layout.publish_command == "PUBLISH"


def test_cluster_layout_has_the_partitions_setting() -> None:
    """A cluster target gets Layout(partitions): SPUBLISH, a fence per partition and control."""
    layout = layout_for(parse_redis_url("redis+cluster://h1:7000"), 16)
    assert layout.partitions == 16
    assert layout.publish_command == "SPUBLISH"
    # every partition's fence copy, and one in the control slot
    assert len(layout.fence_keys()) == 17
    assert layout.control_fence_key() in layout.fence_keys()
    stream, ids, live = layout.control_keys()
    slots = {key_slot(key) for key in (stream, ids, live, layout.control_fence_key())}
    assert len(slots) == 1


def test_listener_reads_the_partitions_setting() -> None:
    """PGCAST_REDIS_PARTITIONS: 64 by default, 1..1024, else a one-line ConfigError."""
    base = {"REDIS_URL": "redis+cluster://h1:7000"}
    assert load_settings(base).redis_partitions == DEFAULT_PARTITIONS == 64
    settings = load_settings({**base, "PGCAST_REDIS_PARTITIONS": "128"})
    assert settings.layout() == Layout(128)
    assert load_settings({"PGCAST_REDIS_PARTITIONS": "128"}).layout() == Layout()
    for bad in ("0", "1025", "many"):
        with pytest.raises(ConfigError, match="PGCAST_REDIS_PARTITIONS"):
            load_settings({**base, "PGCAST_REDIS_PARTITIONS": bad})
