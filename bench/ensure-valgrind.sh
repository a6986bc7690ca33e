#!/bin/sh
# Make sure valgrind exists for bench.instructions and its test. Installs Debian's valgrind
# only when it is missing and we are root; otherwise says exactly what to run.
set -eu

if command -v valgrind >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "valgrind is missing. Install it, then run this again:" >&2
    echo "    sudo apt-get install -y valgrind    # Debian/Ubuntu" >&2
    exit 1
fi
echo "valgrind is missing: installing Debian's valgrind (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if ! apt-get install -y -q --no-install-recommends valgrind >/dev/null; then
    echo "could not install valgrind with apt-get; install it by hand and retry" >&2
    exit 1
fi
command -v valgrind >/dev/null 2>&1
