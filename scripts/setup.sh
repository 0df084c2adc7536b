#!/usr/bin/env bash
# Installs what SwiftSSI needs beyond the Swift toolchain, idempotently: only packages that
# are missing are installed, and apt-get update runs only when something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v setpriv >/dev/null || need+=(util-linux)
command -v unshare >/dev/null || need+=(util-linux)
command -v script >/dev/null || need+=(bsdutils)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
# Real programs the cluster tests run across migrations (redis behind the cluster address).
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
# PostgreSQL, checkpointed and restarted by the real-program tests (RealProgramTests).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
# Debian daemons moved around the cluster together (ServicesClusterTests).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v memcached >/dev/null || [ -x /usr/bin/memcached ] || need+=(memcached)
command -v tmux >/dev/null || need+=(tmux)
# A traced application (strace inside it) must be refused a migration and left running.
command -v strace >/dev/null || need+=(strace)
# The dashboard's browser test (Tests/SSIObserveTests) renders the page in headless chromium.
command -v chromium >/dev/null || need+=(chromium)

if ((${#need[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages: ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The cluster layer brings its own dependencies (etcd, nftables).
if [ -x scripts/setup-cluster.sh ]; then
    scripts/setup-cluster.sh
fi

command -v swift >/dev/null || { echo "setup: the Swift toolchain is not on PATH (expected /opt/swift/usr/bin)" >&2; exit 1; }
