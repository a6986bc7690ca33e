"""The listener's Redis scripts: their text (shipped beside this module) and SHA1 id.

``publish.lua`` (numbered events), ``control.lua`` (server-side control), ``reset.lua``
(a new, empty epoch) and the fence claim; EVALSHA'd, loaded on NOSCRIPT.
"""

from __future__ import annotations

import hashlib
from importlib import resources


def _text(name: str) -> str:
    return resources.files("listener").joinpath(name).read_text()


def sha(script: str) -> str:
    """The id Redis gives ``script`` (SCRIPT LOAD, EVALSHA)."""
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis' script id


PUBLISH_SCRIPT = _text("publish.lua")
CONTROL_SCRIPT = _text("control.lua")
RESET_SCRIPT = _text("reset.lua")

# Raise the fence to ARGV[1] unless a newer leader already raised it past: 1 = ours.
CLAIM_SCRIPT = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = tonumber(ARGV[1])
if epoch < fence then return 0 end
if epoch > fence then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
PUBLISH_SHA = sha(PUBLISH_SCRIPT)
CLAIM_SHA = sha(CLAIM_SCRIPT)
CONTROL_SHA = sha(CONTROL_SCRIPT)
RESET_SHA = sha(RESET_SCRIPT)
