"""The nginx configs (local stack and compose) are accepted by a real ``nginx -t``.

nginx is a prerequisite of the test command (``make install-system``): if it is
missing, these tests fail and say how to install it; they never skip.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from deploy import certs, nginx
from deploy.config import build, find_nginx, parse_args
from deploy.procs import plan
from tests.unit.test_deploy_facts import ROOT

NGINX_SRC = ROOT / "deploy" / "nginx"


def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        pytest.fail(
            "nginx is not installed: run `make install-system` (apt-get install nginx-light)"
        )
    return binary


def nginx_t(binary: str, conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-t", "-p", str(prefix), "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_stack_config_renders_and_passes_nginx_t(tmp_path: Path) -> None:
    """Every placeholder is filled, every gateway is an upstream, and nginx accepts it."""
    binary = nginx_binary()
    args = parse_args(["--run-dir", str(tmp_path), "--port", "18443", "--gateways", "3"])
    config = build(args, {})
    text = nginx.render(config)
    assert "@" not in re.sub(r"\$\w+", "", text.split("log_format")[0])
    for port in config.gateway_ports:
        assert f"server 127.0.0.1:{port} " in text
    assert "listen 127.0.0.1:18443 ssl;" in text
    certs.ensure(config.tls_dir)
    path = nginx.write(config)
    result = nginx_t(binary, path, config.nginx_dir)
    assert result.returncode == 0, result.stderr
    nginx.check(config, path)


def test_nginx_check_reports_nginx_words(tmp_path: Path) -> None:
    """A config nginx rejects raises NginxConfigError carrying nginx's own message."""
    nginx_binary()
    config = build(parse_args(["--run-dir", str(tmp_path)]), {})
    path = nginx.write(config)  # no TLS files yet: nginx cannot load the certificate
    with pytest.raises(nginx.NginxConfigError, match=r"cert\.pem"):
        nginx.check(config, path)


def test_compose_config_passes_nginx_t(tmp_path: Path) -> None:
    """The compose nginx config (with its shared locations) is valid nginx, paths aside."""
    binary = nginx_binary()
    certs.ensure(tmp_path / "tls")
    server = (NGINX_SRC / "compose.conf").read_text()
    server = server.replace("/etc/nginx/tls/", f"{tmp_path}/tls/")
    server = server.replace("/etc/nginx/pgcast/locations.conf", str(NGINX_SRC / "locations.conf"))
    server = server.replace("/var/log/nginx/", f"{tmp_path}/")
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    temp_paths = "".join(f"{n}_temp_path {tmp_path}/{n};\n" for n in ("proxy", "fastcgi"))
    temp_paths += "".join(f"{n}_temp_path {tmp_path}/{n};\n" for n in ("uwsgi", "scgi"))
    temp_paths += f"client_body_temp_path {tmp_path}/client_body;\n"
    main = (
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{\n{temp_paths}access_log off;\n{server}\n}}\n"
    )
    (tmp_path / "nginx.conf").write_text(main)
    result = nginx_t(binary, tmp_path / "nginx.conf", tmp_path)
    assert result.returncode == 0, result.stderr


def test_websocket_and_sse_settings_are_shared() -> None:
    """Both configs include one locations file: upgrade headers, no SSE buffering, no query logs."""
    locations = (NGINX_SRC / "locations.conf").read_text()
    ws = locations[locations.index("location /ws") : locations.index("location /sse")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_http_version 1.1;" in ws
    sse = locations[locations.index("location /sse") :]
    assert "proxy_buffering off;" in sse
    for conf in ("stack.conf.in", "compose.conf"):
        text = (NGINX_SRC / conf).read_text()
        assert re.search(r"include \S*(locations\.conf|@LOCATIONS@);", text), conf
        log_format = text[text.index("log_format") : text.index(";", text.index("log_format"))]
        # Tokens may ride in ?token=: the access log must not print query strings.
        for leaky in ("$request ", '$request"', "$request_uri", "$args", "$query_string"):
            assert leaky not in log_format, (conf, leaky)


def test_demo_route_is_served_under_its_prefix(tmp_path: Path) -> None:
    """With --demo, nginx proxies /demo/ to the demo app (prefix stripped); nginx accepts it."""
    binary = nginx_binary()
    config = build(parse_args(["--run-dir", str(tmp_path), "--demo"]), {})
    specs = plan(config)
    (demo,) = [s for s in specs if s.route]
    text = nginx.render(config, specs)
    assert f"location {demo.route} {{" in text
    assert f"proxy_pass http://127.0.0.1:{demo.port}/;" in text
    assert "location /demo/" not in nginx.render(config, [s for s in specs if not s.route])
    certs.ensure(config.tls_dir)
    result = nginx_t(binary, nginx.write(config, specs), config.nginx_dir)
    assert result.returncode == 0, result.stderr
