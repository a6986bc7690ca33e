#!/bin/sh
# Make sure Debian's chromium exists for the browser tests (tests/browser/).
# Installs it with apt-get only when /usr/bin/chromium is missing and we are root;
# otherwise says exactly what to run. Playwright never downloads a browser here:
# the tests launch this binary (PGCAST_TEST_CHROMIUM overrides the path).
set -eu

binary="${PGCAST_TEST_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$binary" ]; then
    exit 0
fi

if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing (needed by tests/browser). Install it, then run this again:" >&2
    echo "    sudo apt-get install -y chromium    # Debian (Ubuntu: a .deb of chromium, not the snap)" >&2
    exit 1
fi

echo "chromium is missing: installing Debian's chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if ! apt-get install -y -q --no-install-recommends chromium >/dev/null; then
    echo "could not install chromium with apt-get; install it by hand and retry" >&2
    exit 1
fi
test -x "$binary"
