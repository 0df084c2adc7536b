#!/usr/bin/env bash
# The main job, in short: start a counter as an application, checkpoint it, kill it,
# restart it from the snapshot with the same PID, and watch it go on counting. Then the
# cluster core: a 3-node local cluster, a shared KDDM counter, a node killed and rejoining.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: checkpoint/restart needs root (ptrace, clone3 with set_tid, cgroups): run it with sudo" >&2
    exit 1
fi
BIN=$(swift build --show-bin-path)
SSI="$BIN/ssi"
work=$(mktemp -d /tmp/ssi-demo.XXXXXX)
export SSI_CHKPT_DIR="$work/chkpt"
gcc -O2 -o "$work/counter" Tests/Fixtures/counter.c

# `ssi run` in the foreground stays the application's parent and reaps it when it is
# killed, so its PID is free for the restart. --local: a node-local application even if a
# daemon or a local cluster is up on this machine (it would otherwise become a cluster
# application, with an id of the cluster's).
"$SSI" run --local -o "$work/app" -- "$work/counter" > "$work/counter.log" 2>&1 < /dev/null &
sleep 1
APP=$(cat "$work/app")
echo "== started application $APP; its output so far: $(tr '\n' ' ' < "$work/counter.log" | tail -c 60)"
echo "== ssi checkpoint --kill=KILL $APP"
"$SSI" checkpoint --kill=KILL -d "demo" "$APP"
wait || true
echo "== killed; last line written: $(tail -n 1 "$work/counter.log"); PID $APP is $( [ -e /proc/$APP ] && echo alive || echo gone)"
sleep 1
echo "== ssi restart $APP (same PID, from the snapshot)"
"$SSI" restart -f "$APP" &
sleep 1.5
echo "== PID $APP is $(cat /proc/$APP/comm 2>/dev/null || echo missing), still counting: $(tail -n 4 "$work/counter.log" | tr '\n' ' ')"
kill "$APP"
wait || true
echo "== snapshots:"
"$SSI" snapshots "$APP"
rm -rf "$work"

echo
echo "== ssi cluster up --nodes 3 (one network namespace per node, etcd for membership)"
"$SSI" cluster up --nodes 3 | head -1
trap '"$SSI" cluster down >/dev/null 2>&1 || true' EXIT
"$SSI" nodes status | tr '\n' ' '; echo
for k in 1 2 3; do "$SSI" kddm incr counters 1 --count 100 --node "$k" > /dev/null & done
wait
echo "== three nodes added 100 each to one KDDM counter through grab/put: $("$SSI" kddm get counters 1 --node 2)"
kill -9 "$(cat "/run/ssi-cluster${SSI_CLUSTER_NAME:+-$SSI_CLUSTER_NAME}/pids/node2")"
sleep 3
echo "== node 2 killed (kill -9); node 1 sees: $("$SSI" nodes status --node 1 | tr '\n' ' ')"
echo "== the counter, read from node 3: $("$SSI" kddm get counters 1 --node 3)"
"$SSI" cluster start-node 2 > /dev/null
sleep 1
echo "== node 2 restarted: $("$SSI" nodes status --node 1 | tr '\n' ' ')"
echo "== ssi run --node 2: a cluster application, in a PID namespace of its own"
APP=$("$SSI" run --node 2 -b --log -- /bin/sh -c 'i=0; while :; do i=$((i+1)); sleep 0.2; done' | awk '{print $3}')
"$SSI" caps "$APP" +CAN_MIGRATE > /dev/null
echo "== ssi migrate $APP 3"
"$SSI" migrate "$APP" 3 > /dev/null
"$SSI" ps
echo "== the scheduler of node 1: $("$SSI" sched status --node 1 | head -1)"
"$SSI" cluster down
