"""The native load generator (``loadgen.c``): built on first use, rebuilt when the source is newer.

``binary()`` returns the path of the built program, or ``None`` where it cannot
be built (no C compiler, or the compiler failed; the reason is in
``last_error``): the orchestrator then runs the Python load generator.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "loadgen.c"
BUILD_DIR = HERE / "build"
BINARY = BUILD_DIR / "loadgen"
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]

last_error = ""


def fresh() -> bool:
    """The binary exists and is not older than its source."""
    return BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime


def binary() -> Path | None:
    """The compiled load generator, building it when missing or stale; ``None`` if it cannot be."""
    global last_error
    if fresh():
        return BINARY
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        last_error = "no C compiler (gcc) on PATH"
        return None
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent builders never see half a binary.
    fd, tmp = tempfile.mkstemp(prefix=".loadgen-", dir=BUILD_DIR)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *CFLAGS, "-o", tmp, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            last_error = f"{cc} failed: {done.stderr.strip()[-2000:]}"
            return None
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable, like any build output
        os.replace(tmp, BINARY)
        return BINARY
    except (OSError, subprocess.SubprocessError) as exc:
        last_error = f"{cc}: {exc}"
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
