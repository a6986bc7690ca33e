"""The browser client's unit tests (tests/js, node's built-in runner) run as part of pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_browser_client_unit_tests_pass_under_node() -> None:
    """`node --test tests/js/` passes: the client's state machine with fake sockets."""
    node = shutil.which("node")
    assert node is not None, "node (>= 20) is needed for the browser client's unit tests"
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout or "fail 0" in result.stdout, result.stdout[-3000:]
