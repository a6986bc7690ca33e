"""Which channel a meta key names, for the reset after a lost replication slot."""

from __future__ import annotations

import pytest

from listener.channel_reset import channel_of
from pgcast.keys import Layout

SINGLE = Layout()
CLUSTER = Layout(partitions=16)


@pytest.mark.parametrize("channel", ["feed", "user:42", "a}:b", "odd{name}", "x:meta"])
@pytest.mark.parametrize("layout", [SINGLE, CLUSTER], ids=["single", "cluster"])
def test_a_channels_meta_key_names_it(channel: str, layout: Layout) -> None:
    assert channel_of(layout.channel_keys(channel).meta, layout) == channel


@pytest.mark.parametrize(
    "key", ["pgcast:{feed}:hist", "pgcast:fence", "pgcast:{control}:stream", "other:{a}:meta"]
)
def test_other_keys_name_no_channel(key: str) -> None:
    assert channel_of(key, SINGLE) is None
    assert channel_of(key, CLUSTER) is None
