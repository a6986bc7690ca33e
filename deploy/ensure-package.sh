#!/bin/sh
# Make sure a program from a Debian package exists:
#   sh deploy/ensure-package.sh PROGRAM PACKAGE NEEDED_BY [HINT]
# PROGRAM is a command name or a path (a glob where the path names a version, like
# /usr/lib/postgresql/*/bin/initdb). Installs PACKAGE with apt-get only when PROGRAM is
# missing and we are root; otherwise says exactly what to run (HINT: where Debian's
# package name is not the whole story) and fails.
set -eu

program="$1" package="$2" needed_by="$3" hint="${4:-}"
found() {
    command -v "$program" >/dev/null 2>&1 && return 0
    for path in $program; do  # unquoted: a glob expands to the installed versions
        [ -x "$path" ] && return 0
    done
    return 1
}

if found; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "$package is missing (needed by $needed_by). Install it, then run this again:" >&2
    echo "    sudo apt-get install -y $package    # Debian${hint:+ ($hint)}" >&2
    exit 1
fi
echo "$package is missing: installing Debian's $package (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if ! apt-get install -y -q --no-install-recommends "$package" >/dev/null; then
    echo "could not install $package with apt-get; install it by hand and retry" >&2
    exit 1
fi
found
