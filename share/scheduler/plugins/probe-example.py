#!/usr/bin/env python3
"""An external probe (docs/scheduler.md, "Plug-ins"): reads one JSON request per line on
stdin, answers one JSON line on stdout. This one reports the number of entries in the
directory given by the probe's `dir` attribute, and the 1-minute load average."""
import json, os, sys

for line in sys.stdin:
    req = json.loads(line)
    if req.get("request") != "sample":
        print(json.dumps({"error": "unknown request %r" % req.get("request")}), flush=True)
        continue
    d = req.get("parameters", {}).get("dir", "/tmp")
    try:
        files = len(os.listdir(d))
    except OSError as e:
        print(json.dumps({"error": "cannot list %s: %s" % (d, e.strerror)}), flush=True)
        continue
    print(json.dumps({"values": {"files": files, "loadavg": os.getloadavg()[0]}}), flush=True)
