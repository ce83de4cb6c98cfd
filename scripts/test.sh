#!/usr/bin/env bash
# Run nomp's checks and tests. Installs what is missing first (see
# setup.sh); the tests start their own redis-server and litecoind regtest
# nodes on free loopback ports and stop them when done.
#   scripts/test.sh                 everything
#   scripts/test.sh test.test_chain only these test modules (trial names)
set -euo pipefail
NOMP_TEST_TOOLS=1 source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$NOMP_ROOT"

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check --quiet .
say "mypy"
"$VENV/bin/mypy"
say "tests"
"$VENV/bin/python" -m twisted.trial --temp-directory="${TMPDIR:-/tmp}/nomp-trial-$$" "${@:-test}"
