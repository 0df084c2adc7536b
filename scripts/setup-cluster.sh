#!/bin/sh
# Installs what SwiftSSI's cluster core needs beyond the Swift toolchain: etcd (membership
# and durable KDDM objects, v3 API), iproute2 (network namespaces, veth, bridge) and
# nftables. Idempotent and quiet: it installs only what is missing. Called by scripts/setup.sh.
set -eu
missing=""
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
command -v etcdctl >/dev/null 2>&1 || missing="$missing etcd-client"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "setup-cluster.sh: missing$missing; run this script as root to install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
# etcd-server's postinst may try to start a system etcd; we start our own per cluster.
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian starts a system-wide etcd on 2379 when systemd runs; ours use their own ports,
# but stop it where it could start so it holds no lock or port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi
