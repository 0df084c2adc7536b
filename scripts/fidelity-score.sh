#!/bin/bash
# fidelity-score.sh [--ssi PATH] [FIXTURE...]: runs issue 10's fixtures (Tests/Fixtures/ISSUE10.md)
# through checkpoint, kill and restart with Tests/Fixtures/lifecycle.sh, one line each, and
# prints the score "N/36 PASS" (35 fixtures, dgramclosed.c also with no-seqpacket). Needs root. The runs are the ones Tests/SSICheckpointTests/
# FidelityTests.swift makes (keep the two lists alike).
here=$(cd "$(dirname "$0")/.." && pwd)
fx=$here/Tests/Fixtures
ssi=$here/.build/debug/ssi
[ "$1" = "--ssi" ] && { ssi=$2; shift 2; }
export SSI_CLUSTER_NAME=${SSI_CLUSTER_NAME:-fidelity}
runs=(
    "pipeorphan.c" "--pipes --rs-arg --inherit-fd --rs-arg 5 extpipe.c" "cwddeleted.c" "fifounlinked.c"
    "inotifyremoved.c" "unixrelpath.c" "scmpipe.c" "dgramclosed.c" "dgramclosed.c no-seqpacket" "udp.c"
    "--peer $fx/tcppeer.c --ck-arg --tcp-established --rs-arg --tcp-established tcpexternal.c @PORT"
    "tcptimewait.c" "threadleader.c" "fanotify.c" "pty.c" "nsfd.c" "nsuts.c" "nsipc.c" "nsnet.c" "nsmnt.c"
    "nspid.c" "timerfd.c" "epoll.c" "zombies.c" "stopsig.c" "sessions.c" "posixtimers.c" "sockopts.c"
    "locks.c" "mtime.c" "unlinkedmeta.c" "sharedbig.c 64" "madvise.c" "mprotectro.c" "sigtrap.c" "mqueue.c"
)
pass=0 total=0
for r in "${runs[@]}"; do
    if [ $# -gt 0 ]; then
        hit=0; for want in "$@"; do [[ " $r " == *" $want.c "* || " $r " == *" $want "* ]] && hit=1; done
        [ $hit = 1 ] || continue
    fi
    read -ra words <<< "$r"
    opts=() prog=() seen=0
    for w in "${words[@]}"; do
        if [ $seen = 0 ] && [[ "$w" == *.c ]] && [[ "$w" != */* ]]; then prog=("$fx/$w"); seen=1; continue; fi
        if [ $seen = 0 ]; then opts+=("$w"); else prog+=("$w"); fi
    done
    out=$(bash "$fx/lifecycle.sh" --ssi "$ssi" "${opts[@]}" "${prog[@]}" 2>&1)
    rc=$?
    total=$((total + 1))
    [ $rc = 0 ] && pass=$((pass + 1))
    printf '%-4s %-28s %s\n' "$rc" "${r##*/}" "$(echo "$out" | grep '^==== ' | head -1 | cut -c1-220)"
done
echo "SCORE $pass/$total PASS"
