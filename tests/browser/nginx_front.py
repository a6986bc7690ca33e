"""nginx in front of the test's gateways and the demo app, configured as ``make up`` does.

The config is the stack's own (``deploy/nginx``: TLS, a ``least_conn`` upstream of the
gateways, ``/ws`` and ``/sse`` with WebSocket upgrade, the demo app at ``/demo/``),
rendered by :mod:`deploy.nginx` with the test's ports and checked with ``nginx -t``.
Page and WebSocket share one origin, ``https://127.0.0.1:<port>``; the certificate comes
from a throwaway development CA, so browser contexts need ``ignore_https_errors``.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy import certs, nginx
from deploy.config import StackConfig, find_nginx
from deploy.procs import ProcSpec, nginx_spec
from tests.servers import free_port


@dataclass
class NginxFront:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_healthy(front: NginxFront, limit: float = 20.0) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if front.process.poll() is not None:
            raise RuntimeError(f"nginx exited {front.process.returncode}:\n{front.output()}")
        with contextlib.suppress(OSError):
            url = f"{front.origin}/nginx-health"
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        time.sleep(0.05)  # polling nginx's own health location until it answers
    raise TimeoutError(f"nginx not healthy after {limit}s:\n{front.output()}")


@contextlib.contextmanager
def nginx_front(
    run_dir: Path, gateway_ports: Sequence[int], demo_port: int, port: int | None = None
) -> Iterator[NginxFront]:
    """Run nginx on ``port`` (a free one by default) until the block exits."""
    binary = find_nginx()
    if binary is None:
        raise RuntimeError("nginx is not installed: run `make install-system`")
    config = StackConfig(
        run_dir=run_dir,
        database_url="",
        redis_url="",
        https_port=port or free_port(),
        gateway_ports=tuple(gateway_ports),
        nginx_binary=binary,
    )
    certs.generate(config.tls_dir)
    demo = ProcSpec(name="demo", kind="demo", argv=(), port=demo_port, route="/demo/")
    nginx.check(config, nginx.write(config, [demo]))
    log = run_dir / "nginx.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(nginx_spec(config).argv, stdout=sink, stderr=subprocess.STDOUT)
    front = NginxFront(config.https_port, process, log)
    try:
        _wait_healthy(front)
        yield front
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
