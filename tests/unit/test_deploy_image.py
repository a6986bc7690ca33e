"""The Dockerfile, offline: multi-stage, non-root, gunicorn's uvloop worker, a complete context."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import yaml
from docker.utils.build import exclude_paths

from tests.unit.test_deploy_facts import ROOT, gunicorn_settings, load_yaml_docs

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every ``name`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, re.M)]


def context_files() -> set[str]:
    """The files `docker build .` sends, after .dockerignore."""
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    return set(exclude_paths(str(ROOT), patterns))


def test_multi_stage_non_root_with_healthcheck() -> None:
    """A build stage and a runtime stage; the runtime runs as the uid k8s expects."""
    stages = [line.split()[-1] for line in instructions("FROM")]
    assert stages == ["build", "runtime"]
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert uid != "0"
    for name in ("gateway.yaml", "listener.yaml"):
        (deployment,) = load_yaml_docs(ROOT / "k8s" / name)
        assert str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid
    (check,) = instructions("HEALTHCHECK")
    assert "/healthz" in check
    assert "PGCAST_PORT" in check


def test_default_command_is_the_gateway_under_gunicorn_everywhere() -> None:
    """The image's CMD is the command compose and k8s give the gateway."""
    (cmd,) = instructions("CMD")
    argv = json.loads(cmd)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["gateway"]["command"] == argv
    (deployment,) = load_yaml_docs(ROOT / "k8s" / "gateway.yaml")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == argv
    assert compose["x-pgcast"]["build"]["target"] == "runtime"


def test_gunicorn_runs_the_aiohttp_uvloop_worker_on_the_app_factory() -> None:
    """The worker class exists, and the app spec names gateway.app's async factory."""
    settings = gunicorn_settings({"PGCAST_PORT": "9999", "PGCAST_HOST": "127.0.0.1"})
    assert settings["worker_class"] == "aiohttp.worker.GunicornUVLoopWebWorker"
    module, _, cls = settings["worker_class"].rpartition(".")
    assert hasattr(importlib.import_module(module), cls)
    assert settings["bind"] == "127.0.0.1:9999"
    assert settings["accesslog"] is None
    assert settings["control_socket_disable"] is True
    (cmd,) = instructions("CMD")
    app_module, _, factory = json.loads(cmd)[-1].partition(":")
    assert inspect.iscoroutinefunction(getattr(importlib.import_module(app_module), factory))


def test_build_context_holds_every_package_and_data_file() -> None:
    """`pip install .` in the build stage finds every package and data file pyproject names."""
    files = context_files()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    package_dir = tool.get("package-dir", {})
    for package in tool["packages"]:
        directory = package_dir.get(package, package.replace(".", "/"))
        assert f"{directory}/__init__.py" in files, package
        for pattern in tool.get("package-data", {}).get(package, []):
            matches = [f for f in files if fnmatch(f, f"{directory}/{pattern}")]
            assert matches, f"{package}: nothing in the context matches {pattern}"
    assert project["project"]["readme"] in files
    for line in instructions("COPY"):
        if line.startswith("--from"):
            continue
        *sources, _ = line.split()
        for source in sources:
            if source != ".":
                assert source in files or any(f.startswith(source) for f in files), source
    assert not any(f.startswith((".venv/", ".git/", ".run/", "tests/")) for f in files)


def test_context_leaves_out_local_secrets(tmp_path: Path) -> None:
    """.env files (compose's secrets), .git and .run/ never enter an image."""
    for name in (".env", ".env.example", "pyproject.toml", ".run/jwt-secret", ".git/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    sent = set(exclude_paths(str(tmp_path), patterns))
    assert sent == {"pyproject.toml"}
