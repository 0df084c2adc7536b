#!/usr/bin/env bash
# Installs ssi, ssid, ssi-init and ssi-bench (release build) to PREFIX/bin (default /usr/local), with
# Kerrighed's command names as links to ssi: krgcr-run, checkpoint, restart, ipccheckpoint,
# ipcrestart, krgadm; the man pages (PREFIX/share/man/man1: `man ssi-checkpoint`) and the
# bash, zsh and fish completions (PREFIX/share/{bash-completion/completions,zsh/site-functions,
# fish/vendor_completions.d}).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-/usr/local}
swift build -c release
BIN=$(swift build -c release --show-bin-path)
install -d "$PREFIX/bin"
for b in ssi ssid ssi-init ssi-bench; do install -m 0755 "$BIN/$b" "$PREFIX/bin/$b"; done
for alias in krgcr-run checkpoint restart ipccheckpoint ipcrestart krgadm; do ln -sf ssi "$PREFIX/bin/$alias"; done
man=$(mktemp -d)
trap 'rm -rf "$man"' EXIT
scripts/man.sh "$man" release >/dev/null
install -d "$PREFIX/share/man/man1" "$PREFIX/share/bash-completion/completions" \
    "$PREFIX/share/zsh/site-functions" "$PREFIX/share/fish/vendor_completions.d"
install -m 0644 "$man"/man1/*.1 "$PREFIX/share/man/man1/"
install -m 0644 "$man/completions/ssi.bash" "$PREFIX/share/bash-completion/completions/ssi"
install -m 0644 "$man/completions/_ssi" "$PREFIX/share/zsh/site-functions/_ssi"
install -m 0644 "$man/completions/ssi.fish" "$PREFIX/share/fish/vendor_completions.d/ssi.fish"
command -v mandb >/dev/null && mandb -q "$PREFIX/share/man" 2>/dev/null || true
echo "installed to $PREFIX/bin, man pages to $PREFIX/share/man/man1, completions for bash, zsh and fish"
