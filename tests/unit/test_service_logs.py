"""Service logs stay in the test session's directory and go with it (no
``pgcast-svc-*.log`` left in the system temp dir)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.processes import Service, log_directory


def test_service_logs_live_in_the_session_directory(service_logs: Path) -> None:
    """A service's log file is created in the session's log directory, readable at once."""
    service = Service("gateway", {})
    assert service.log_path.parent == service_logs
    assert service.log() == ""
    assert service_logs.parent == Path(tempfile.gettempdir())


def test_a_log_directory_is_removed_with_its_logs_on_exit(service_logs: Path) -> None:
    """Nested: new logs go to the inner directory, which is removed on exit; the session's
    directory is in force again afterwards."""
    with log_directory() as inner:
        service = Service("listener", {})
        service.log_path.write_text("started\n")
        assert service.log_path.parent == inner
        assert service.log() == "started\n"
    assert not inner.exists()
    assert Service("listener", {}).log_path.parent == service_logs
