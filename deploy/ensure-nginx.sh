#!/bin/sh
# Make sure an nginx binary exists for `make up` and the stack test: Debian's nginx-light,
# or nginx where -light is gone (deploy/ensure-package.sh installs it when missing and we
# are root). Never starts the system service: the stack runs its own nginx with a private
# config.
set -eu

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
# RUNLEVEL=1 keeps invoke-rc.d from starting the system-wide nginx on port 80.
export RUNLEVEL=1
package=nginx
if command -v apt-get >/dev/null 2>&1; then
    [ "$(id -u)" != "0" ] || apt-get update -q >/dev/null
    if apt-cache show nginx-light >/dev/null 2>&1; then
        package=nginx-light
    fi
fi
exec sh "$(dirname "$0")/ensure-package.sh" /usr/sbin/nginx "$package" "make up" "or: nginx"
