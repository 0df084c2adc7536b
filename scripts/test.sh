#!/usr/bin/env bash
# The test command (README, .ci/run): installs dependencies, builds, runs every test.
# Tests that need root skip themselves, with the reason printed, when run as another user.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ "$(id -u)" -eq 0 ] || echo "test: not root: the checkpoint/restart, IPC and cluster tests will be skipped (they need root)"
swift build --build-tests
# One suite at a time: the cluster tests measure failure detection (3 s) and the C/R tests
# freeze real processes; on a 2-core machine running them all at once makes timings flaky.
swift test --skip-build --no-parallel "$@"
