"""Install what the peers need, once, from the project's own files.

python-socketio comes from the ``bench`` extra in pyproject.toml; the Node peer
from bench/peers/node/package-lock.json (``npm ci`` into its gitignored
node_modules). A missing ``node`` binary is an error with the install hint,
never a silent skip.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "peers" / "node"


def ensure_peers(systems: set[str], log: Callable[[str], None]) -> None:
    if "python-socketio" in systems and importlib.util.find_spec("socketio") is None:
        log("installing the bench extra (python-socketio) into this environment")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"],
            check=True,
            timeout=600,
        )
    if "node-socketio" in systems:
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise SystemExit(
                "the Node Socket.IO peer needs node and npm (Debian: apt-get install nodejs npm)"
            )
        if not (NODE_DIR / "node_modules" / "socket.io").exists():
            log("installing the Node peer's packages (npm ci)")
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600
            )
