#!/usr/bin/env python3
"""An external policy (docs/scheduler.md, "Plug-ins"): gets the cluster view, answers
decisions. This one moves this node's largest application (by RSS) to the node with the
fewest applications whenever this node has `max-apps` or more."""
import json, sys

for line in sys.stdin:
    req = json.loads(line)
    if req.get("request") != "decide":
        print(json.dumps({"error": "unknown request %r" % req.get("request")}), flush=True)
        continue
    me, view = req["node"], req["view"]
    limit = int(req.get("parameters", {}).get("max-apps", "4"))
    nodes = [n for n in view["nodes"] if n["online"]]
    mine = next((n for n in nodes if n["node"] == me), None)
    others = [n for n in nodes if n["node"] != me]
    decisions = []
    if mine and others and len(mine["apps"]) >= limit:
        target = min(others, key=lambda n: (len(n["apps"]), n["node"]))
        app = max(mine["apps"], key=lambda a: a["rssBytes"])
        decisions.append({"migrate": {"app": app["app"], "to": target["node"]},
                          "reason": "%d applications here (limit %d); node %d has %d"
                                    % (len(mine["apps"]), limit, target["node"], len(target["apps"]))})
    print(json.dumps({"decisions": decisions}), flush=True)
