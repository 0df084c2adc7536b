#!/bin/bash
# The seed's scenario (D2.2.11 section 2), run by SSIIPCTests in fresh IPC and PID
# namespaces (this shell is PID 1 there and reaps every orphan):
#   freeze the app, checkpoint its queue, copy its log, checkpoint the app, unfreeze it;
#   later (after the app and its queue are lost) restore the queue, copy the log back,
#   restart the app; every message must arrive exactly once, in order.
# Usage: msgqueue-scenario.sh SSI MSGAPP DIR
set -eu
SSI=$1 APPBIN=$2 DIR=$3
cd "$DIR"
export SSI_CHKPT_DIR="$DIR/chkpt"
COUNT=60
"$SSI" run -o app -- "$APPBIN" 0x5151 $COUNT > out.log 2>&1 < /dev/null &
# The id file appears once ssi run knows the id, which may be after the program's first
# output: wait for both.
for i in $(seq 100); do grep -q READY out.log 2>/dev/null && [ -s app ] && break; sleep 0.05; done
APP=$(cat app)
Q=$(sed -n 's/.*queue \([0-9]*\).*/\1/p' out.log)
sleep 0.5
"$SSI" checkpoint -f "$APP"
"$SSI" ipc checkpoint -q "$Q" "$DIR/queue.dat"
cp log.txt log.saved
"$SSI" checkpoint -c "$APP" > ckpt.out
"$SSI" checkpoint -u "$APP"
sleep 0.3
# Later: the application and its queue are gone.
kill -9 -- "-$APP" || true
wait || true
ipcrm -q "$Q"
for i in $(seq 100); do [ -z "$(ls /proc | grep -x "$APP")" ] && break; sleep 0.05; done
# Restore the queue, then the log, then the application.
"$SSI" ipc restart -q "$DIR/queue.dat"
cp log.saved log.txt
"$SSI" restart -f "$APP" >> out.log 2>&1
echo "EXIT $?"
seq 1 $COUNT | sed 's/^/got /' > expected.txt
if cmp -s expected.txt log.txt; then echo "SCENARIO PASS"; else echo "SCENARIO FAIL"; diff expected.txt log.txt | head; fi
