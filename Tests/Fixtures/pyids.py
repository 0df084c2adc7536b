# Issue 17: a python3 program migrated between nodes. It keeps 4 MiB of random data and its
# digest, its pid and ppid (as seen in its own PID namespace: 2 and 1) and a loop counter;
# on SIGUSR1 it checks all of them, prints PASS or FAIL and exits 0 or 1.
import hashlib, os, signal, sys, time

data = bytearray(os.urandom(4 << 20))
digest = hashlib.sha256(data).hexdigest()
pid, ppid = os.getpid(), os.getppid()
go = False

def on_usr1(sig, frame):
    global go
    go = True

signal.signal(signal.SIGUSR1, on_usr1)
print("READY", pid, ppid, flush=True)
loops = 0
while not go:
    loops += 1
    time.sleep(0.02)
failures = []
if (os.getpid(), os.getppid()) != (pid, ppid):
    failures.append("pid/ppid %d/%d became %d/%d" % (pid, ppid, os.getpid(), os.getppid()))
if hashlib.sha256(data).hexdigest() != digest:
    failures.append("its data changed")
for f in failures:
    print("FAIL:", f, flush=True)
print("PASS" if not failures else "FAIL", "pid", os.getpid(), "ppid", os.getppid(), "loops", loops, flush=True)
sys.exit(1 if failures else 0)
