#!/bin/bash
# lifecycle.sh: one test program of Tests/Fixtures through the life the Swift tests give it
# (World.checkAfterRestart), by hand:
#
#   lifecycle.sh [options] FIXTURE.c [args...]
#
#   compile (gcc -O2 -pthread -Wall ... -lrt), `ssi run --local -b -o APPFILE -- ./prog args` (--local: on this machine even while a local cluster is up) in a temp
#   dir with its stdout in out.log, wait for READY, `ssi checkpoint --kill=KILL APP`, reap what
#   was killed, `ssi restart APP`, send SIGUSR1, wait for PASS/FAIL, print the verdict and the
#   log. Exit 0 on PASS; 1 on FAIL or no verdict; 2 refused at checkpoint; 3 refused at
#   restart; 4 setup error (compile, start, no READY).
#
# Options:
#   --ssi PATH        the ssi binary (default: $SSI, else ssi on PATH, else .build/release/ssi
#                     or .build/debug/ssi of this repository)
#   --no-cr           no checkpoint/restart: SIGUSR1 right after READY (every fixture must
#                     PASS this way, or it is wrong)
#   --ck-arg ARG      one more argument for `ssi checkpoint` (repeatable: --ck-arg --tcp-established)
#   --rs-arg ARG      one more argument for `ssi restart` (repeatable)
#   --pipes           the application's stdin, stdout and fd 5 are pipes to processes OUTSIDE
#                     the application (a feeder, `cat >> out.log`, `cat >> side.log`), as in
#                     `feeder | ssi run -- app | tee log`; the harness writes "unread-1\n" to
#                     stdin before READY, and "after-2\n" once the application runs again; the
#                     restart gets new pipes of the same kinds as its own fds 0, 1 and 5 (see
#                     extpipe.c); side.log must end up holding "side-before\nside-after\n"
#   --peer PEER.c     compile PEER.c and run it outside the application before it (peer.log);
#                     it prints "PORT n": every "@PORT" among the fixture's args becomes n. The
#                     file "go" is created in the peer's directory after SIGUSR1 is sent; the
#                     peer must print "PEER PASS" for the run to pass (see tcp_external.c)
#   --timeout S       seconds to wait for the verdict after SIGUSR1 (default 40)
#   --continue        `ssi checkpoint APP` without --kill, then SIGUSR1 to the application that
#                     went on: checks what a checkpoint leaves in a running application
#   --gap S           seconds between the checkpoint's kill and the restart (default 0): the
#                     application is down that long, as after a failure (timeouts.c)
#   --keep            keep the temp dir (printed)
#
# Needs root. PID 1 may not reap orphans: the script runs itself under a python3 wrapper that
# is a child subreaper (PR_SET_CHILD_SUBREAPER) and reaps every process that ends up its child
# (the application, once `ssi run -b` / `ssi restart` have returned), writing "pid status" to
# $LIFECYCLE_REAPED, so that killed PIDs are free again for the restart.

if [ -z "$LIFECYCLE_REAPED" ]; then
    reaped=$(mktemp /tmp/lifecycle-reaped.XXXXXX)
    export LIFECYCLE_REAPED=$reaped
    exec python3 - "$0" "$@" <<'EOF'
import ctypes, os, sys, signal
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:      # PR_SET_CHILD_SUBREAPER
    sys.exit("lifecycle.sh: PR_SET_CHILD_SUBREAPER failed")
log = os.environ["LIFECYCLE_REAPED"]
script = os.fork()
if script == 0:
    os.execvp("bash", ["bash"] + sys.argv[1:])
signal.signal(signal.SIGINT, lambda *a: os.kill(script, signal.SIGINT))
signal.signal(signal.SIGTERM, lambda *a: os.kill(script, signal.SIGTERM))
code = 4
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == script:
        code = os.waitstatus_to_exitcode(status)
        if code < 0: code = 128 - code
        break
    with open(log, "a") as f:
        f.write("%d %d\n" % (pid, status))
# Orphans still around (a fixture that hung): reap what is already dead, then leave.
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid == 0: break
    except ChildProcessError:
        break
try: os.unlink(log)
except OSError: pass
sys.exit(code)
EOF
fi

set -u
here=$(cd "$(dirname "$0")" && pwd)
ssi=${SSI:-}
nocr=0 pipes=0 keep=0 timeout=40 peer="" gap=0 cont=0
ckargs=() rsargs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ssi) ssi=$2; shift 2 ;;
        --no-cr) nocr=1; shift ;;
        --continue) cont=1; shift ;;
        --ck-arg) ckargs+=("$2"); shift 2 ;;
        --rs-arg) rsargs+=("$2"); shift 2 ;;
        --pipes) pipes=1; shift ;;
        --peer) peer=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --gap) gap=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) echo "lifecycle.sh: unknown option $1" >&2; exit 4 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: lifecycle.sh [--ssi PATH] [--no-cr] [--ck-arg A] [--rs-arg A] [--pipes] [--peer P.c] FIXTURE.c [args]" >&2; exit 4; }
src=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); shift
name=$(basename "$src" .c)
if [ -z "$ssi" ]; then
    ssi=$(command -v ssi || true)
    for c in "$here/../../.build/release/ssi" "$here/../../.build/debug/ssi"; do
        [ -z "$ssi" ] && [ -x "$c" ] && ssi=$c
    done
fi
[ -x "$ssi" ] || { echo "lifecycle.sh: no ssi binary (use --ssi PATH)" >&2; exit 4; }

tmp=$(mktemp -d "/tmp/lifecycle-$name.XXXXXX")
export SSI_CHKPT_DIR=$tmp/chkpt
mkdir -p "$tmp/run" "$tmp/peer"
log=$tmp/out.log
: > "$log"
app="" peerpid="" feeder="" skip=0

# Every process of the application: its cgroup if it has one, plus the descendants of its root.
app_pids() {
    local root=$1 cg
    {
        for cg in /sys/fs/cgroup/ssi/app-"$root"/cgroup.procs /sys/fs/cgroup/unified/ssi/app-"$root"/cgroup.procs; do
            [ -r "$cg" ] && cat "$cg"
        done
        echo "$root"
        local frontier=("$root") next p
        while [ ${#frontier[@]} -gt 0 ]; do
            next=()
            for p in "${frontier[@]}"; do
                for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do echo "$c"; next+=("$c"); done
            done
            frontier=("${next[@]}")
        done
    } | sort -un
}

kill_app() {
    [ -n "$app" ] || return 0
    local p
    for p in $(app_pids "$app"); do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
}

finish() {
    local code=$1 verdict=$2
    kill_app
    [ -n "$peerpid" ] && kill "$peerpid" 2>/dev/null
    [ -n "$feeder" ] && kill "$feeder" 2>/dev/null
    exec 7>&- 8>&- 2>/dev/null
    sleep 0.2
    echo "==== $name: $verdict"
    [ -s "$tmp/ssi.out" ] && { echo "---- ssi output"; cat "$tmp/ssi.out"; }
    echo "---- log ($log)"
    cat "$log"
    if [ -n "$peer" ]; then echo "---- peer log"; cat "$tmp/peer/peer.log" 2>/dev/null; fi
    if [ "$pipes" = 1 ]; then echo "---- side.log"; cat "$tmp/side.log" 2>/dev/null; fi
    if [ "$keep" = 1 ]; then echo "---- kept $tmp"; else rm -rf "$tmp"; fi
    exit "$code"
}
trap 'finish 4 "interrupted"' INT TERM

wait_for() {   # wait_for SECONDS FILE TEXT...: true once FILE contains one of the TEXTs
    local secs=$1 file=$2; shift 2
    local end=$((SECONDS + secs)) t
    while [ $SECONDS -le $end ]; do
        for t in "$@"; do grep -q -- "$t" "$file" 2>/dev/null && return 0; done
        sleep 0.05
    done
    return 1
}

gcc -O2 -pthread -Wall -o "$tmp/prog" "$src" -lrt -lutil 2> "$tmp/gcc.err" || { cat "$tmp/gcc.err"; finish 4 "compile error"; }

args=("$@")
if [ -n "$peer" ]; then
    psrc=$(cd "$(dirname "$peer")" && pwd)/$(basename "$peer")
    gcc -O2 -pthread -Wall -o "$tmp/peerprog" "$psrc" 2> "$tmp/gcc.err" || { cat "$tmp/gcc.err"; finish 4 "peer compile error"; }
    (cd "$tmp/peer" && exec "$tmp/peerprog" > peer.log 2>&1) &
    peerpid=$!
    wait_for 10 "$tmp/peer/peer.log" "^PORT " || finish 4 "peer printed no PORT"
    port=$(sed -n 's/^PORT //p' "$tmp/peer/peer.log" | head -1)
    for i in "${!args[@]}"; do args[$i]=${args[$i]//@PORT/$port}; done
fi

start_cmd=("$ssi" run --local -b -o "$tmp/app" -- "$tmp/prog" "${args[@]}")
if [ "$pipes" = 1 ]; then
    mkfifo "$tmp/in1.fifo" "$tmp/in2.fifo"
    start_cmd=("$ssi" run --local -b --keep-fds -o "$tmp/app" -- "$tmp/prog" "${args[@]}")
    # stdin: a pipe from a feeder outside the application; stdout: a pipe to cat; fd 5: a pipe
    # to another cat. The feeder holds the write end of the pipe; we write to it through a FIFO.
    (cd "$tmp/run" && exec "${start_cmd[@]}") < <(exec cat "$tmp/in1.fifo") > >(exec cat >> "$log") 2>&1 5> >(exec cat >> "$tmp/side.log")
    rc=$?
    exec 7> "$tmp/in1.fifo"
    printf 'unread-1\n' >&7
else
    (cd "$tmp/run" && exec "${start_cmd[@]}") < /dev/null > "$log" 2>&1
    rc=$?
fi
[ $rc = 0 ] && [ -s "$tmp/app" ] || finish 4 "ssi run failed ($rc)"
app=$(cat "$tmp/app")
wait_for 20 "$log" "^READY" || finish 4 "no READY"
sleep 0.3

if [ "$nocr" = 0 ] && [ "$cont" = 1 ]; then
    ck=$("$ssi" checkpoint "${ckargs[@]}" "$app" 2>&1)
    rc=$?
    printf '%s\n' "$ck" >> "$tmp/ssi.out"
    if [ $rc != 0 ]; then
        echo "---- ssi checkpoint:"; echo "$ck"
        finish 2 "REFUSED at checkpoint: $(echo "$ck" | grep -v '^$' | tail -3 | tr '\n' ' ')"
    fi
    sleep 0.3
elif [ "$nocr" = 0 ]; then
    ck=$("$ssi" checkpoint --kill=KILL "${ckargs[@]}" "$app" 2>&1)
    rc=$?
    if [ $rc != 0 ]; then
        echo "---- ssi checkpoint:"; echo "$ck"
        finish 2 "REFUSED at checkpoint: $(echo "$ck" | grep -v '^$' | tail -3 | tr '\n' ' ')"
    fi
    printf '%s\n' "$ck" >> "$tmp/ssi.out"
    version=$(echo "$ck" | sed -n 's/^Version: //p')
    pids=$(python3 -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1])).get("processes", []))))' \
        "$SSI_CHKPT_DIR/$app/v$version/manifest.json" 2>/dev/null)
    [ -n "$pids" ] || pids=$app
    end=$((SECONDS + 15))
    for p in $pids; do
        while [ -e /proc/"$p" ] && [ $SECONDS -le $end ]; do sleep 0.05; done
        [ -e /proc/"$p" ] && echo "warning: PID $p still there after checkpoint --kill: $(head -c 200 /proc/$p/stat)"
    done
    sleep 0.1
    sleep "$gap"
    skip=$(wc -l < "$LIFECYCLE_REAPED")       # what the checkpoint's kill left there
    if [ "$pipes" = 1 ]; then
        exec 7>&-
        # (stderr to a file, not to $(...): the application may be given ssi's fds 0-2)
        (cd "$tmp/run" && exec "$ssi" restart "${rsargs[@]}" "$app") < <(exec cat "$tmp/in2.fifo") > >(exec cat >> "$log") 2> "$tmp/rs.err" 5> >(exec cat >> "$tmp/side.log")
        rc=$?
        rs=$(cat "$tmp/rs.err")
        exec 7> "$tmp/in2.fifo"
    else
        rs=$(cd "$tmp/run" && "$ssi" restart "${rsargs[@]}" "$app" < /dev/null 2>&1)
        rc=$?
    fi
    printf '%s\n' "$rs" >> "$tmp/ssi.out"
    if [ $rc != 0 ]; then
        echo "---- ssi restart:"; echo "$rs"
        app=""   # nothing of it runs
        finish 3 "REFUSED at restart: $(echo "$rs" | grep -v '^$' | tail -3 | tr '\n' ' ')"
    fi
    [ -e /proc/"$app" ] || finish 1 "FAIL: restart returned 0 but PID $app is not there"
    sleep 0.3
fi

[ "$pipes" = 1 ] && printf 'after-2\n' >&7
describe_status() {   # a wait status word, as text
    local st=$1
    if [ -z "$st" ]; then echo "not reaped"; elif [ $((st & 0x7f)) = 0 ]; then echo "exited $(((st >> 8) & 0xff))";
    else echo "killed by signal $((st & 0x7f))$([ $((st & 0x80)) != 0 ] && echo ' (core)')"; fi
}
if ! kill -USR1 "$app" 2>/dev/null; then
    sleep 0.2
    finish 1 "FAIL: PID $app gone before SIGUSR1 ($(describe_status "$(tail -n +$((skip + 1)) "$LIFECYCLE_REAPED" | sed -n "s/^$app //p" | tail -1)"))"
fi
[ -n "$peer" ] && touch "$tmp/peer/go"
wait_for "$timeout" "$log" "^PASS" "FAIL" || finish 1 "FAIL: no verdict within ${timeout}s"
# Let every process of the application print and exit, then take the root's exit status.
# (Only what was reaped after the restart: the checkpoint's kill of the same PID is there too.)
end=$((SECONDS + 10))
while [ $SECONDS -le $end ] && ! tail -n +$((skip + 1)) "$LIFECYCLE_REAPED" | grep -q "^$app "; do sleep 0.05; done
status=$(tail -n +$((skip + 1)) "$LIFECYCLE_REAPED" | sed -n "s/^$app //p" | tail -1)
if [ -n "$peer" ]; then
    wait_for 15 "$tmp/peer/peer.log" "PEER PASS" "PEER FAIL"
    grep -q "PEER PASS" "$tmp/peer/peer.log" || finish 1 "FAIL (peer): $(grep PEER "$tmp/peer/peer.log" | tail -3 | tr '\n' ' ')"
fi
if [ "$pipes" = 1 ]; then
    sleep 0.3
    [ "$(cat "$tmp/side.log" 2>/dev/null)" = "$(printf 'side-before\nside-after')" ] || finish 1 "FAIL: side.log (fd 5's pipe) holds '$(tr '\n' '|' < "$tmp/side.log")'"
fi
if grep -q "FAIL" "$log" || ! grep -q "^PASS" "$log"; then
    finish 1 "FAIL: $(grep FAIL "$log" | head -8 | tr '\n' ';')"
fi
[ "$status" = 0 ] || finish 1 "FAIL: PASS printed but the root $(describe_status "$status")"
finish 0 "PASS$([ "$nocr" = 1 ] && echo ' (no C/R)')$([ "$nocr" = 0 ] && [ "$cont" = 1 ] && echo ' (checkpoint, no kill)')"
