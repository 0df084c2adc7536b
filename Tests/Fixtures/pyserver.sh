#!/bin/sh
# A threaded python3 TCP server and a client in one application: the client keeps one
# connection and sends n, the server answers n+1; every 200 round trips the client prints
# "OK n". Any wrong or missing answer prints FAIL and stops. Used to checkpoint, kill and
# restart a live conversation.
cat > server.py <<'PY'
import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"%d\n" % (int(line) + 1))
socketserver.ThreadingTCPServer.allow_reuse_address = True
srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
open("port.tmp", "w").write(str(srv.server_address[1]))
import os; os.rename("port.tmp", "port")
srv.serve_forever()
PY
cat > client.py <<'PY'
import socket, time, os
while not os.path.exists("port"): time.sleep(0.01)
s = socket.create_connection(("127.0.0.1", int(open("port").read())))
f = s.makefile("rwb")
n = 0
while True:
    f.write(b"%d\n" % n); f.flush()
    got = f.readline()
    if got != b"%d\n" % (n + 1):
        print("FAIL at", n, got, flush=True); break
    n += 1
    if n % 200 == 0: print("OK", n, flush=True)
    time.sleep(0.0005)
PY
rm -f port
python3 -u server.py &
exec python3 -u client.py
