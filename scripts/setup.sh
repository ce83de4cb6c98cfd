#!/usr/bin/env bash
# Install what nomp needs on a Debian machine: system packages (redis-server,
# litecoind, a C compiler and Python headers; chromium and haproxy too when
# test.sh sets NOMP_TEST_TOOLS=1, for the site's browser tests and the
# load-balancer test),
# then a virtualenv in .venv with nomp and its C extension built, and
# nomp-notify compiled into .venv/bin. Safe to run
# again: it only adds what is missing. Sourced by demo.sh and test.sh.
set -euo pipefail

NOMP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$NOMP_ROOT/.venv"
PYTHON="${PYTHON:-python3}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "need root (or sudo) to run: $*" >&2; return 1
    fi
}

install_system_packages() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    if [ "${NOMP_TEST_TOOLS:-0}" = 1 ]; then
        command -v chromium >/dev/null || missing+=(chromium)  # the site's browser tests
        # the load balancer in front of two pools; in /usr/sbin, off a plain user's PATH
        command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    fi
    command -v litecoind >/dev/null || missing+=(litecoind)
    command -v gcc >/dev/null || missing+=(gcc)
    command -v "$PYTHON" >/dev/null || missing+=(python3)
    if command -v "$PYTHON" >/dev/null; then
        "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
        "$PYTHON" - <<'PY' 2>/dev/null || missing+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_python_packages() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.nomp-installed"
    # Reinstall when the package definition or the C sources changed.
    if [ ! -f "$stamp" ] || [ -n "$(find "$NOMP_ROOT/setup.cfg" "$NOMP_ROOT/setup.py" "$NOMP_ROOT/pyproject.toml" \
            "$NOMP_ROOT/nomp/hashing/csrc" "$NOMP_ROOT/nomp/hashing/_build.py" -newer "$stamp" 2>/dev/null | head -1)" ]; then
        say "installing nomp into $VENV (builds the C extension)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        # compat mode puts the checkout itself on sys.path, so twistd finds
        # twisted/plugins/nomp_plugin.py and the extension is built in place.
        "$VENV/bin/python" -m pip install -q -e "$NOMP_ROOT[test]" --config-settings editable_mode=compat
        touch "$stamp"
    fi
}

# nomp-notify, the daemons' -blocknotify (nomp/notify): a small C program
# next to nomp-cli, compiled again only when its source changed.
install_notifier() {
    "$VENV/bin/python" "$NOMP_ROOT/nomp/notify/build.py" "$VENV/bin/nomp-notify"
}

install_system_packages
install_python_packages
install_notifier
