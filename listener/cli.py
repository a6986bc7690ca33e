"""``pgcast-listener``: build the settings, configure logging, run until SIGTERM/SIGINT.

Exit codes (pgcast.runtime): 0 after a clean stop, 2 on bad configuration
(one line on stderr), 1 after a crash.
"""

from __future__ import annotations

import logging
import os
import sys

from listener import service
from listener.config import load_settings
from pgcast.logs import configure
from pgcast.runtime import run_service
from pgcast.settings import ConfigError

log = logging.getLogger(__name__)


def main() -> int:
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"pgcast-listener: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure(settings.log_level, settings.log_format)
    if settings.unknown:
        # The gateway's settings commonly share this environment: note, never fail.
        log.info("PGCAST_ variables the listener does not use: %s", ", ".join(settings.unknown))
    return run_service(lambda: service.run(settings))


if __name__ == "__main__":
    sys.exit(main())
