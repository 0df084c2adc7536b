#!/usr/bin/env bash
# Writes the manual pages and shell completions of ssi, generated from its command
# definitions (swift-argument-parser): OUT/man1/ssi.1, ssi-checkpoint.1, ssi-cluster-up.1, ...
# and OUT/completions/{ssi.bash,_ssi,ssi.fish}. Usage: scripts/man.sh [OUT] [debug|release]
# (default OUT=.build/man, debug). The generator is swift-argument-parser's generate-manual,
# the tool behind its generate-manual plugin, run directly: the plugin insists on a release
# build of the whole package first, which takes minutes on a small machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.build/man}
CONF=${2:-debug}
swift build -c "$CONF" --product ssi >/dev/null
swift build -c "$CONF" --product generate-manual >/dev/null
BIN=$(swift build -c "$CONF" --show-bin-path)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN/generate-manual" "$BIN/ssi" --multi-page --section 1 --authors "SwiftSSI developers" --output-directory "$tmp"
mkdir -p "$OUT/man1" "$OUT/completions"
rm -f "$OUT"/man1/ssi*.1
for f in "$tmp"/*.1; do
    page=$(basename "$f" .1)
    # ssi.cluster.up -> ssi-cluster-up, as git names its pages: `man ssi-cluster-up`.
    name=${page//./-}
    case "$name" in ssi-help|ssi-cluster-supervise) continue ;; esac   # internal commands
    upper=$(echo "$page" | tr '[:lower:]' '[:upper:]')
    # A blank line is not mdoc: it becomes a paragraph break.
    sed -e "s/^$/.Pp/" -e "s/^\.Dt ${upper//./\\.} /.Dt $(echo "$name" | tr '[:lower:]' '[:upper:]') /" "$f" > "$OUT/man1/$name.1"
done
"$BIN/ssi" --generate-completion-script bash > "$OUT/completions/ssi.bash"
"$BIN/ssi" --generate-completion-script zsh > "$OUT/completions/_ssi"
"$BIN/ssi" --generate-completion-script fish > "$OUT/completions/ssi.fish"
echo "man pages: $(ls "$OUT/man1" | wc -l) in $OUT/man1; completions in $OUT/completions"
