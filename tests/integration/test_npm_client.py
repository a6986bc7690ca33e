"""The npm package `pgcast-client` (clients/js) as a user gets it: `npm pack`, the tarball
installed offline into a fresh project, then imported by node by its package name.

No server: the checks are the exported API, the package's entry points and a client and a
React hook that subscribe without connecting. The client's behaviour against real gateways
is tests/browser/test_js_client.py's business.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
INSTALL_HINT = (
    "install node (>= 18) and npm: `make install-node` (Debian: apt-get install nodejs npm)"
)

EXPECTED_FILES = {
    "README.md",
    "package.json",
    "src/client.js",
    "src/client.d.ts",
    "src/react.js",
    "src/react.d.ts",
}

# Runs in the consumer project: only the package name, as an app would import it.
CONSUMER = """
import * as pg from 'pgcast-client';
import {
  PgcastContext, PgcastProvider, useBroadcast, useChannel, useConnectionState, usePresence,
} from 'pgcast-client/react';
import { render } from 'react';

const client = new pg.PgcastClient({
  url: 'https://rt.example.com/app', token: 't', autoConnect: false,
});
const sub = client.subscribe('articles', () => {}, { epoch: 'e1', offset: '7' });
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

function Feed() {
  useChannel('orders', () => {});
  return useConnectionState();
}
const view = render(Feed, {}, { context: [[PgcastContext, client]] });
const hooked = client._subs.has('orders');
view.unmount();

console.log(JSON.stringify({
  exports: Object.keys(pg).sort(),
  resolved: import.meta.resolve('pgcast-client'),
  state: client.state,
  endpoints: client.endpoints,
  subscription: { state: sub.state, position: sub.position },
  expiry: pg.tokenExpiry(`h.${b64({ exp: 1234 })}.s`),
  offsets: [pg.compareOffsets('10', '9'), pg.compareOffsets('9', '10')],
  closeCodes: Object.keys(pg.CLOSE_CODES),
  react: [PgcastProvider, useChannel, useConnectionState, usePresence, useBroadcast]
    .map((f) => typeof f),
  hooked,
  unhooked: !client._subs.has('orders'),
  firstRender: view.instance.slots.length > 0,
}));
client.close();
"""


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is missing: {INSTALL_HINT}"
    return path


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-3000:]}{result.stderr}"
    return result.stdout


@pytest.fixture
def npm_env(tmp_path: Path) -> dict[str, str]:
    """npm with a private, empty cache under the test's temp dir: no network, no ~/.npm."""
    return {
        **os.environ,
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_update_notifier": "false",
        "npm_config_audit": "false",
        "npm_config_fund": "false",
    }


def pack(npm: str, destination: Path, env: dict[str, str]) -> dict[str, Any]:
    out = run([npm, "pack", "--json", "--pack-destination", str(destination)], PACKAGE, env)
    packed: list[dict[str, Any]] = json.loads(out)
    assert len(packed) == 1
    return packed[0]


def test_npm_pack_ships_the_source_types_and_readme(
    tmp_path: Path, npm_env: dict[str, str]
) -> None:
    """`npm pack` makes one tarball with exactly the ESM source, its types and the README."""
    packed = pack(tool("npm"), tmp_path, npm_env)
    assert packed["name"] == "pgcast-client"
    assert {f["path"] for f in packed["files"]} == EXPECTED_FILES
    assert (tmp_path / packed["filename"]).is_file()


def test_packed_tarball_installs_offline_and_imports_by_name(
    tmp_path: Path, npm_env: dict[str, str]
) -> None:
    """The tarball installed offline into a new project imports as 'pgcast-client' and
    'pgcast-client/react'; a client and the hook subscribe without a server."""
    node, npm = tool("node"), tool("npm")
    tarball = tmp_path / pack(npm, tmp_path, npm_env)["filename"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "consumer", "private": true, "type": "module"}')
    run([npm, "install", "--offline", "--ignore-scripts", str(tarball)], app, npm_env)
    installed = app / "node_modules" / "pgcast-client"
    # One source: what npm installs is what the gateway serves at /client.js.
    served = ROOT / "gateway" / "static" / "client.js"
    assert (installed / "src" / "client.js").read_bytes() == served.read_bytes()
    # React is an optional peer: the consumer brings its own (here the tests' minimal one).
    react = app / "node_modules" / "react"
    react.mkdir()
    (react / "package.json").write_text('{"name": "react", "type": "module", "main": "index.js"}')
    shutil.copy(ROOT / "tests" / "js" / "fake-react.mjs", react / "index.js")

    out = run([node, "--input-type=module", "-e", CONSUMER], app, npm_env)
    got = json.loads(out.strip().splitlines()[-1])

    assert got["resolved"] == (installed / "src" / "client.js").as_uri()
    assert set(got["exports"]) >= {
        "PgcastClient",
        "Subscription",
        "connect",
        "CLOSE_CODES",
        "STATES",
        "tokenExpiry",
        "compareOffsets",
        "endpoints",
    }
    assert got["state"] == "idle"
    assert got["endpoints"] == {
        "ws": "wss://rt.example.com/app/ws",
        "sse": "https://rt.example.com/app/sse",
    }
    assert got["subscription"] == {
        "state": "pending",
        "position": {"epoch": "e1", "offset": "7"},
    }
    assert got["expiry"] == 1234000
    assert got["offsets"] == [1, -1]
    assert set(got["closeCodes"]) == {"1009", "1012", "4001", "4003", "4008"}
    assert got["react"] == ["function"] * 5
    assert got["hooked"], "useChannel did not subscribe"
    assert got["unhooked"], "unmounting did not unsubscribe"
    assert got["firstRender"]
