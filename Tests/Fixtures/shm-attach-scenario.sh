#!/bin/bash
# A process attached to a SysV shared memory segment (run in fresh IPC and PID namespaces):
# its restart fails clearly while the segment is missing, and re-attaches it at the same
# address once `ssi ipc restart -m` has brought it back. Usage: SSI IPC_TOOL DIR
set -u
SSI=$1 TOOL=$2 DIR=$3
cd "$DIR"
export SSI_CHKPT_DIR="$DIR/chkpt"
ID=$("$TOOL" mkshm 0x7777 65536 0600)
"$TOOL" touch "$ID" 3 0x5a > /dev/null
"$SSI" run -o app -- "$TOOL" hold "$ID" 100 > out.log 2>&1 < /dev/null &
# The id file appears once ssi run knows the id, which may be after the program's first
# output: wait for both.
for i in $(seq 100); do grep -q attached out.log 2>/dev/null && [ -s app ] && break; sleep 0.05; done
APP=$(cat app)
ADDR=$(grep SYSV "/proc/$APP/maps" | cut -d' ' -f1)
"$SSI" checkpoint --kill=KILL "$APP" > /dev/null || echo "CHECKPOINT FAILED"
wait
"$SSI" ipc checkpoint -m "$ID" "$DIR/shm.dat"
"$TOOL" rm m "$ID"
if "$SSI" restart "$APP" 2> err.txt; then echo "RESTART WITHOUT SEGMENT: succeeded"; else echo "ERR: $(head -1 err.txt)"; echo "HINT: $(sed -n 2p err.txt)"; fi
"$SSI" ipc restart -m "$DIR/shm.dat" > /dev/null
"$SSI" restart "$APP" > /dev/null 2>&1 && echo "RESTARTED"
sleep 0.2
echo "ADDR: $ADDR / $(grep SYSV "/proc/$APP/maps" | cut -d' ' -f1)"
echo "PEEK: $("$TOOL" peek "$ID" 3)"
kill -9 "$APP"
