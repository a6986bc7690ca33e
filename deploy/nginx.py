"""The stack's private nginx: render its config into the run dir and check it with ``nginx -t``.

The template (``deploy/nginx/stack.conf.in``) and the locations it includes
(``deploy/nginx/locations.conf``, shared with docker compose) live in the repo;
only ports and paths are filled in. ``@NAME@`` placeholders, because ``$`` and
braces already mean something to nginx.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from deploy.config import StackConfig
from deploy.procs import ProcSpec

NGINX_SRC = Path(__file__).resolve().parent / "nginx"
TEMPLATE = NGINX_SRC / "stack.conf.in"
LOCATIONS = NGINX_SRC / "locations.conf"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxConfigError(RuntimeError):
    """nginx rejected the generated config: the message carries its words."""


ROUTE = """
        location = {bare} {{
            return 301 {prefix};
        }}
        location {prefix} {{
            proxy_pass http://127.0.0.1:{port}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Prefix {bare};
        }}"""


def routes(specs: Sequence[ProcSpec]) -> str:
    """Locations for processes with a ``route`` (the demo app at /demo/)."""
    return "".join(
        ROUTE.format(prefix=s.route, bare=s.route.rstrip("/"), port=s.port)
        for s in specs
        if s.route is not None and s.port is not None
    )


def render(config: StackConfig, specs: Sequence[ProcSpec] = ()) -> str:
    """The nginx.conf text for ``config`` (pure: no file is written)."""
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;"
        for port in config.gateway_ports
    )
    values = {
        "NGINX_DIR": str(config.nginx_dir),
        "LOG_DIR": str(config.log_dir),
        "TLS_DIR": str(config.tls_dir),
        "BIND": config.bind,
        "HTTPS_PORT": str(config.https_port),
        "UPSTREAM_SERVERS": servers,
        "LOCATIONS": str(LOCATIONS),
        "ROUTES": routes(specs),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise NginxConfigError(f"unfilled placeholders in {TEMPLATE.name}: {sorted(set(left))}")
    return text


def write(config: StackConfig, specs: Sequence[ProcSpec] = ()) -> Path:
    """Write nginx.conf and the temp dirs nginx wants; returns the config's path."""
    for name in TEMP_DIRS:
        (config.nginx_dir / "tmp" / name).mkdir(parents=True, exist_ok=True)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    path = config.nginx_dir / "nginx.conf"
    path.write_text(render(config, specs))
    return path


def check(config: StackConfig, path: Path) -> None:
    """``nginx -t`` on the written config; raises :class:`NginxConfigError` with nginx's words."""
    argv = [config.nginx_binary, "-t", "-q", "-p", str(config.nginx_dir), "-e", "stderr"]
    result = subprocess.run(
        [*argv, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise NginxConfigError(f"nginx -t rejected {path}:\n{result.stderr.strip()}")
