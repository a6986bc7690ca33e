"""The documentation against the code, wherever the two can disagree.

docs/configuration.md names exactly the ``PGCAST_*`` variables the listener's and
the gateway's settings read; docs/operations.md names every metric the listener
and the gateway register, and no page names one that does not exist;
docs/protocol.md lists every close and error code of gateway/codes.py. The
README stays a short front page whose links land on real files. No servers.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from gateway.codes import CloseCode, ErrorCode
from gateway.config import GatewaySettings
from gateway.metrics import PREFIX as GATEWAY_PREFIX
from gateway.metrics import Metrics
from listener.config import load_settings
from listener.metrics import ListenerMetrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# The gateway refuses to build settings without a token key; a valid secret is all it needs.
GATEWAY_MINIMAL_ENV = {"PGCAST_JWT_SECRET": "s" * 32}
VARIABLE = re.compile(r"\bPGCAST_[A-Z0-9_]*[A-Z0-9]\b")
METRIC = re.compile(r"\bpgcast_(?:listener|gateway)_[a-z0-9_]*[a-z0-9]\b")
# What prometheus-client appends to a family's name in its samples.
SAMPLE_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count")
README_MAX_LINES = 300


class RecordingEnv(dict[str, str]):
    """An environment that remembers every name the settings looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


def _pgcast_names(names: Iterable[str]) -> set[str]:
    return {n for n in names if n.startswith("PGCAST_")}


def listener_variables() -> set[str]:
    env = RecordingEnv({})
    load_settings(env)
    return _pgcast_names(env.asked)


def gateway_variables() -> set[str]:
    env = RecordingEnv(GATEWAY_MINIMAL_ENV)
    GatewaySettings.from_env(env)
    return _pgcast_names(env.asked)


def _page(name: str) -> str:
    return (DOCS / name).read_text()


def _families(registry_owner: ListenerMetrics | Metrics) -> set[str]:
    return {family.name for family in registry_owner.registry.collect()}


def _scrape_time_gauges() -> set[str]:
    """Gauges the gateway registers through ``metrics.gauge("name", ...)`` (sessions, hub)."""
    names: set[str] = set()
    for path in sorted((ROOT / "gateway").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            first = node.args[0] if node.args else None
            value = first.value if isinstance(first, ast.Constant) else None
            if node.func.attr == "gauge" and isinstance(value, str):
                names.add(GATEWAY_PREFIX + value)
    return names


def registered_metrics() -> set[str]:
    return _families(ListenerMetrics()) | _families(Metrics()) | _scrape_time_gauges()


def _family_of(name: str, families: set[str]) -> str | None:
    """The registered family a documented name (``x_total``, ``x_bucket``, ``x``) belongs to."""
    if name in families:
        return name
    for suffix in SAMPLE_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix)
    return None


def _table_first_column(text: str, header: str) -> list[str]:
    """First cells of the Markdown table whose header row's first cell starts with ``header``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(header):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(row.strip().strip("|").split("|")[0].strip())
            return rows
    raise AssertionError(f"no table headed {header!r}")


def test_settings_readers_are_seen() -> None:
    """The recording environment sees reads of both processes, so the checks below bite."""
    assert {"PGCAST_HISTORY_SIZE", "PGCAST_REDIS_MIN_REPLICAS"} <= listener_variables()
    assert {"PGCAST_JWT_SECRET", "PGCAST_SEND_QUEUE_BYTES"} <= gateway_variables()


def test_configuration_page_lists_every_variable_the_settings_read() -> None:
    """Every PGCAST_* variable read by the listener or gateway settings is in configuration.md."""
    documented = set(VARIABLE.findall(_page("configuration.md")))
    missing = (listener_variables() | gateway_variables()) - documented
    assert not missing, f"read by the settings, not in docs/configuration.md: {sorted(missing)}"


def test_configuration_page_names_only_variables_the_settings_read() -> None:
    """Every PGCAST_* name in configuration.md is read by the listener or the gateway."""
    documented = set(VARIABLE.findall(_page("configuration.md")))
    unknown = documented - listener_variables() - gateway_variables()
    assert not unknown, f"in docs/configuration.md, read by no settings: {sorted(unknown)}"


def test_operations_page_lists_every_registered_metric() -> None:
    """Every metric family of ListenerMetrics and the gateway's Metrics is in operations.md."""
    families = registered_metrics()
    assert {"pgcast_listener_role", "pgcast_gateway_connections"} <= families
    documented = {_family_of(n, families) for n in METRIC.findall(_page("operations.md"))}
    missing = families - documented
    assert not missing, f"registered, not in docs/operations.md: {sorted(missing)}"


@pytest.mark.parametrize(
    "path", [*sorted(DOCS.glob("*.md")), README], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_docs_name_only_registered_metrics(path: Path) -> None:
    """A metric name in any page (or the README) is one the code registers."""
    families = registered_metrics()
    unknown = {n for n in METRIC.findall(path.read_text()) if _family_of(n, families) is None}
    assert not unknown, f"not registered by the listener or gateway: {sorted(unknown)}"


def test_protocol_page_lists_every_close_and_error_code() -> None:
    """Each CloseCode and ErrorCode of gateway/codes.py appears in protocol.md."""
    text = _page("protocol.md")
    missing = [str(int(c)) for c in CloseCode if f"`{int(c)}`" not in text]
    missing += [e.value for e in ErrorCode if f"`{e.value}`" not in text]
    assert not missing, f"codes not in docs/protocol.md: {missing}"


def test_protocol_tables_name_only_real_codes() -> None:
    """The close-code and error-code tables of protocol.md list nothing codes.py lacks."""
    text = _page("protocol.md")
    closes = {
        int(c) for row in _table_first_column(text, "close code") for c in re.findall(r"\d{4}", row)
    }
    errors = {row.strip("`") for row in _table_first_column(text, "error `code`")}
    assert closes - {int(c) for c in CloseCode} == set()
    assert errors - {e.value for e in ErrorCode} == set()
    assert closes
    assert errors


def test_readme_is_a_short_front_page_with_working_links() -> None:
    """The README keeps the two commands, stays short, and its relative links exist."""
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make up " in text
    assert "make check " in text
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", text)
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


# A documented default that is one plain value (a number, a word): `5`, `0.001`, `auto`.
PLAIN_DEFAULT = re.compile(r"^`([A-Za-z0-9_.]+)`$")
# Differ between two builds whatever the environment: a random id, what was left unread.
VOLATILE_FIELDS = {"gateway_id", "unused_env", "unknown"}


def _documented_defaults() -> list[tuple[str, str]]:
    """(variable, default) for each configuration row whose defaults are plain values, one
    per variable named in the row (``A``, ``B`` | ... | ``1``, ``2``)."""
    pairs = []
    for line in _page("configuration.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not VARIABLE.search(cells[0]):
            continue
        names = VARIABLE.findall(cells[0])
        values = [PLAIN_DEFAULT.match(part.strip()) for part in cells[-1].split(",")]
        if len(values) == len(names) and all(values):
            pairs += [(n, v.group(1)) for n, v in zip(names, values, strict=True) if v]
    return pairs


def _settings_with(name: str, value: str | None) -> dict[str, object]:
    gateway, listener = dict(GATEWAY_MINIMAL_ENV), {}
    if value is not None:
        gateway[name] = listener[name] = value
    built: dict[str, object] = {}
    if name in gateway_variables():
        settings = GatewaySettings.from_env(gateway)
        built.update({f"g.{k}": v for k, v in vars(settings).items()})
    if name in listener_variables():
        listener_settings = load_settings(listener)
        fields = listener_settings.__dataclass_fields__
        built.update({f"l.{k}": getattr(listener_settings, k) for k in fields})
    return {k: v for k, v in built.items() if k.split(".", 1)[1] not in VOLATILE_FIELDS}


@pytest.mark.parametrize(("name", "default"), _documented_defaults())
def test_documented_defaults_are_the_code_defaults(name: str, default: str) -> None:
    """Setting a variable to the default the docs give changes nothing in the settings."""
    assert _settings_with(name, default) == _settings_with(name, None), (name, default)


def test_most_defaults_are_checked() -> None:
    """The default check covers most rows (a table reformatted out of reach fails here)."""
    assert len(_documented_defaults()) >= 40
