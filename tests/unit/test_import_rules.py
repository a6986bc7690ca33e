"""The layering of STYLE.md: which module may import which library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBS = {"aiohttp", "redis", "asyncpg"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _files(pattern: str) -> list[Path]:
    return sorted(ROOT.glob(pattern))


# The one kernel module that connects to Redis (one instance or Sentinel), for both sides.
KERNEL_REDIS_MODULE = "redis_connect.py"


@pytest.mark.parametrize("path", _files("pgcast/*.py"), ids=lambda p: p.name)
def test_kernel_imports_no_io_library(path: Path) -> None:
    """The shared kernel stays free of aiohttp and asyncpg; only redis_connect knows redis."""
    allowed = {"redis"} if path.name == KERNEL_REDIS_MODULE else set()
    assert not imported_roots(path) & (IO_LIBS - allowed)


@pytest.mark.parametrize("path", _files("gateway/*.py"), ids=lambda p: p.name)
def test_gateway_never_imports_listener(path: Path) -> None:
    """The gateway is a stateless edge: it shares only the kernel with the listener."""
    assert "listener" not in imported_roots(path)


@pytest.mark.parametrize("path", _files("listener/*.py"), ids=lambda p: p.name)
def test_listener_never_imports_gateway(path: Path) -> None:
    """The listener never depends on the gateway."""
    assert "gateway" not in imported_roots(path)


@pytest.mark.parametrize("name", ["protocol.py", "auth.py"])
def test_pure_gateway_modules_do_no_io(name: str) -> None:
    """Frame parsing and claims checks are pure: no I/O library."""
    path = ROOT / "gateway" / name
    if path.exists():
        assert not imported_roots(path) & IO_LIBS
