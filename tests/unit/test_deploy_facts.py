"""What the code says, read from its source: env vars read, routes served, scripts declared.

The deploy tests compare docker-compose.yml, the Dockerfile and k8s/ against
these facts, so a renamed variable or probe path fails here, not in production.
The tests in this module check that the readers themselves find known facts.
"""

from __future__ import annotations

import ast
import runpy
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
READER_METHODS = {"text", "optional", "integer", "number", "flag", "choice", "csv", "url"}
CONTRACT_VARS = {"DATABASE_URL", "REDIS_URL"}
# Variables of the tools around pgcast, not of pgcast: gunicorn's own knob.
TOOL_VARS = {"WEB_CONCURRENCY"}


def _calls(paths: Iterable[Path]) -> Iterable[ast.Call]:
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                yield node


def _first_str(call: ast.Call, constants: dict[str, str] | None = None) -> str | None:
    """The call's first argument: a string literal, or a module constant naming one."""
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    if isinstance(first, ast.Name) and constants:
        return constants.get(first.id)
    return None


def _str_constants(path: Path) -> dict[str, str]:
    """``NAME = "text"`` assignments at the top of a module."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def env_read_by(*globs: str) -> set[str]:
    """Variable names passed to EnvReader methods or os.environ.get in the files (as a
    literal or a module constant of that file)."""
    paths = [p for g in globs for p in sorted(ROOT.glob(g))]
    names: set[str] = set()
    for path in paths:
        names |= _env_read_in(path)
    return names


def _env_read_in(path: Path) -> set[str]:
    constants = _str_constants(path)
    names: set[str] = set()
    for call in _calls([path]):
        func = call.func
        name = _first_str(call, constants)
        if name is None or not isinstance(func, ast.Attribute):
            continue
        is_reader = func.attr in READER_METHODS
        is_environ = func.attr == "get" and ast.unparse(func.value) == "os.environ"
        if (is_reader or is_environ) and (name.startswith("PGCAST_") or name.isupper()):
            names.add(name)
    return names


# What the kernel reads for both sides (their settings call it): PGCAST_REDIS_PARTITIONS.
KERNEL_READERS = "pgcast/redis_url.py"


def gateway_env() -> set[str]:
    return env_read_by("gateway/*.py", "deploy/gunicorn_conf.py", KERNEL_READERS)


def listener_env() -> set[str]:
    return env_read_by("listener/config.py", KERNEL_READERS)


def migrate_env() -> set[str]:
    return env_read_by("listener/migrate.py")


def routes(*globs: str) -> set[str]:
    """Paths registered with ``add_get``/``add_route``/``add_static``/``web.get`` in the files."""
    paths = [p for g in globs for p in sorted(ROOT.glob(g))]
    found: set[str] = set()
    for call in _calls(paths):
        func = call.func
        attr = func.attr if isinstance(func, ast.Attribute) else ""
        args = [a for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if attr in ("add_get", "get", "add_route", "add_static") and args:
            found.update(a.value for a in args if a.value.startswith("/"))
    return found


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = project["project"]["scripts"]
    return scripts


def gunicorn_settings(env: dict[str, str]) -> dict[str, Any]:
    """deploy/gunicorn_conf.py evaluated under ``env`` (gunicorn reads it the same way)."""
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, env, clear=True):
        return runpy.run_path(str(ROOT / "deploy" / "gunicorn_conf.py"))


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_env_readers_find_the_contract_variables() -> None:
    """The source readers see the contract's variables where the contract puts them."""
    assert {"REDIS_URL", "PGCAST_JWT_SECRET", "PGCAST_PORT", "PGCAST_HOST"} <= gateway_env()
    assert {"PGCAST_JWT_PUBLIC_KEY", "PGCAST_JWT_JWKS_URL", "PGCAST_ALLOWED_ORIGINS"} <= (
        gateway_env()
    )
    assert {"DATABASE_URL", "REDIS_URL", "PGCAST_LISTENER_PORT"} <= listener_env()
    assert "PGCAST_REDIS_PARTITIONS" in listener_env() & gateway_env()  # through a constant
    assert migrate_env() == {"DATABASE_URL"}
    assert "WEB_CONCURRENCY" in env_read_by("deploy/gunicorn_conf.py")


def test_route_reader_finds_the_probe_paths() -> None:
    """The listener serves /healthz and /metrics; the gateway /healthz, /readyz, /metrics."""
    assert {"/healthz", "/metrics"} <= routes("listener/*.py")
    assert {"/healthz", "/readyz", "/metrics", "/ws", "/sse"} <= routes("gateway/*.py")


def test_console_scripts_are_the_contract_commands() -> None:
    """pyproject declares the four commands of the contract."""
    assert set(console_scripts()) >= {
        "pgcast-migrate",
        "pgcast-listener",
        "pgcast-gateway",
        "pgcast-token",
    }
