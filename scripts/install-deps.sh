#!/bin/sh
# Installs the Debian packages ForgeBox needs to build, test and run.
# Idempotent: packages already present are not touched, and apt-get update runs
# only when something is missing. Every package is named here and nowhere else.
set -eu

PACKAGES="
build-essential pkg-config clang libclang-rt-14-dev musl-tools
libseccomp-dev libcap-dev libsodium-dev libjansson-dev libcmocka-dev
libmicrohttpd-dev libsqlite3-dev libpq-dev libyaml-dev libevent-dev libc-ares-dev libcurl4-gnutls-dev libgnutls28-dev
qemu-system-x86 busybox-static mmdebstrap e2fsprogs erofs-utils cpio kmod zstd xz-utils
bubblewrap python3 python3-pytest python3-pytest-xdist python3-yaml hyperfine wrk procps util-linux sqlite3
chromium chromium-driver python3-selenium openssl postgresql
"
# Node.js and npm run the pinned SDK clients of the compatibility tests
# (tests/compat/e2b, tests/compat/mcp).  A nodejs that bundles its own npm (NodeSource's)
# conflicts with Debian's npm package, so both are asked for only when a
# command is missing; Debian's nodejs 18 is new enough.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PACKAGES="$PACKAGES nodejs npm"
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$missing; run as root to install them" >&2
    exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
