#!/bin/sh
# Make sure Debian's chromium exists for the browser tests (tests/browser/).
# Playwright never downloads a browser here: the tests launch this binary
# (PGCAST_TEST_CHROMIUM overrides the path).
set -eu
exec sh "$(dirname "$0")/../../deploy/ensure-package.sh" "${PGCAST_TEST_CHROMIUM:-/usr/bin/chromium}" \
    chromium tests/browser "Ubuntu: a .deb of chromium, not the snap"
