#!/usr/bin/env bash
# The README's test command: sets the machine up (idempotent), then runs the whole test suite
# against the colcon install space (not the source tree). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export XMASK3D_EXPECT_INSTALL_SPACE="$ROOT/install"
# `pytest` (not `python -m pytest`) so the source tree is not put on sys.path.
set +e
pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
