"""The npm package's files agree with each other: one client source (the gateway's
/client.js is a verbatim copy), declarations for every export, a dependency-free
package.json, and a Next.js example wired to the package and its token route.

Cheap checks, no node; tests/integration/test_npm_client.py packs and imports the package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
SOURCE = PACKAGE / "src"
NEXTJS = ROOT / "examples" / "nextjs"

RUNTIME_EXPORT = re.compile(r"^export (?:async )?(?:class|function|const) (\w+)", re.MULTILINE)
DECLARED_EXPORT = re.compile(r"^export declare (?:class|function|const) (\w+)", re.MULTILINE)


def package_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PACKAGE / "package.json").read_text())
    return data


@pytest.mark.parametrize("name", ["client.js", "client.d.ts"])
def test_gateway_serves_a_verbatim_copy_of_the_package_source(name: str) -> None:
    """gateway/static/<name> equals clients/js/src/<name> (`make client-js` copies it)."""
    served = (ROOT / "gateway" / "static" / name).read_bytes()
    source = (SOURCE / name).read_bytes()
    assert served == source, f"gateway/static/{name} differs from its source: run `make client-js`"


def test_package_json_is_an_esm_package_without_dependencies() -> None:
    """ESM, exports with types for '.' and './react', every target in `files`, no deps."""
    pkg = package_json()
    assert pkg["name"] == "pgcast-client"
    assert pkg["type"] == "module"
    assert not pkg.get("dependencies")
    assert not pkg.get("devDependencies")
    assert pkg["peerDependenciesMeta"]["react"]["optional"] is True
    assert pkg["types"] == pkg["exports"]["."]["types"]
    for entry in (".", "./react"):
        for target in pkg["exports"][entry].values():
            path = PACKAGE / target
            assert path.is_file(), f"{entry} -> {target} does not exist"
            assert any(path.is_relative_to(PACKAGE / f) for f in pkg["files"]), target


@pytest.mark.parametrize(
    ("module", "types"), [("client.js", "client.d.ts"), ("react.js", "react.d.ts")]
)
def test_every_runtime_export_is_declared(module: str, types: str) -> None:
    """Each `export` of the source has a declaration of the same name in its .d.ts."""
    exported = set(RUNTIME_EXPORT.findall((SOURCE / module).read_text()))
    declared = set(DECLARED_EXPORT.findall((SOURCE / types).read_text()))
    assert exported, module
    assert exported == declared


def test_react_example_hook_is_the_package_hook() -> None:
    """examples/react/useChannel.js re-exports the package's hook: one source."""
    text = (ROOT / "examples" / "react" / "useChannel.js").read_text()
    assert "from '../../clients/js/src/react.js'" in text
    assert "useEffect" not in text  # a re-export, not a second copy


def test_nextjs_example_uses_the_package_and_the_token_route() -> None:
    """The token route signs HS256 with PGCAST_JWT_SECRET for the logged-in user; the
    client asks that route; LiveSearch uses useChannel from 'pgcast-client/react'."""
    pkg = json.loads((NEXTJS / "package.json").read_text())
    assert pkg["dependencies"]["pgcast-client"] == "file:../../clients/js"
    route = (NEXTJS / "app" / "api" / "pgcast-token" / "route.ts").read_text()
    assert "PGCAST_JWT_SECRET" in route
    assert "sub: user.id" in route
    assert "currentUser" in route
    assert "export async function POST" in route
    assert "'HS256'" in (NEXTJS / "lib" / "jwt.ts").read_text()
    root = (NEXTJS / "app" / "PgcastRoot.tsx").read_text()
    assert "from 'pgcast-client'" in root
    assert "fetch('/api/pgcast-token', { method: 'POST' })" in root
    search = (NEXTJS / "app" / "LiveSearch.tsx").read_text()
    assert "from 'pgcast-client/react'" in search
    assert "useChannel<" in search
    assert "'use client'" in search
    assert "'use client'" in root
    readme = (NEXTJS / "README.md").read_text()
    for mentioned in ("app/api/pgcast-token/route.ts", "app/LiveSearch.tsx", "lib/session.ts"):
        assert mentioned in readme
        assert (NEXTJS / mentioned).is_file(), mentioned
