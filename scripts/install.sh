#!/usr/bin/env bash
# Installs ssi, ssid and ssi-bench (release build) to PREFIX/bin (default /usr/local), with
# Kerrighed's command names as links to ssi: krgcr-run, checkpoint, restart, ipccheckpoint,
# ipcrestart, krgadm.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-/usr/local}
swift build -c release
BIN=$(swift build -c release --show-bin-path)
install -d "$PREFIX/bin"
for b in ssi ssid ssi-bench; do install -m 0755 "$BIN/$b" "$PREFIX/bin/$b"; done
for alias in krgcr-run checkpoint restart ipccheckpoint ipcrestart krgadm; do ln -sf ssi "$PREFIX/bin/$alias"; done
echo "installed to $PREFIX/bin"
