#!/bin/sh
# Make sure an nginx binary exists for `make up` and the stack test.
# Installs Debian's nginx-light (or nginx where -light is gone) only when nginx is
# missing and we are root; otherwise says exactly what to run. Never starts the
# system service: the stack runs its own nginx with a private config.
set -eu

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi

if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "nginx is missing. Install it, then run this again:" >&2
    echo "    sudo apt-get install -y nginx-light    # Debian/Ubuntu (or: nginx)" >&2
    exit 1
fi

echo "nginx is missing: installing Debian's nginx-light (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
# RUNLEVEL=1 keeps invoke-rc.d from starting the system-wide nginx on port 80.
export RUNLEVEL=1
apt-get update -q >/dev/null
if apt-cache show nginx-light >/dev/null 2>&1; then
    package=nginx-light
else
    package=nginx
fi
if ! apt-get install -y -q --no-install-recommends "$package" >/dev/null; then
    echo "could not install $package with apt-get; install nginx by hand and retry" >&2
    exit 1
fi
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
