"""Running a benchmark module the way its users do, for the bench smoke tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <argv>`` from the repository root; fails the test on a non-zero
    exit with the tail of its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
