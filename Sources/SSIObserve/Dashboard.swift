/// The dashboard: one page, plain HTML, CSS and JavaScript, nothing fetched but the node's own
/// `/api/cluster`, which it polls every 2 seconds. Text from the cluster (commands, event
/// messages, operators' notes) is set with textContent, never parsed as HTML.
enum DashboardPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>SwiftSSI cluster</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
#status { color: #666; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #e3e3e3; white-space: nowrap; }
th { background: #f0f0f0; font-weight: 600; }
td.cmd, td.msg { white-space: normal; font-family: ui-monospace, monospace; font-size: 12px; }
tr.down td { color: #a00; }
tr.failure td { color: #a00; }
.bar { display: inline-block; height: .7em; background: #4a8; vertical-align: middle; margin-right: .4em; }
.empty { color: #888; font-style: italic; }
</style>
</head>
<body>
<h1>SwiftSSI cluster</h1>
<div id="status">loading...</div>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>node</th><th>state</th><th>address</th><th>load 1/5/15</th><th>memory used</th><th>applications</th><th>checkpoints</th><th>restarts</th><th>uptime</th><th>dashboard</th></tr></thead><tbody></tbody></table>
<h2>Applications</h2>
<table id="apps"><thead><tr><th>app</th><th>node</th><th>state</th><th>memory</th><th>snapshot</th><th>checkpoints</th><th>restarts</th><th>command</th></tr></thead><tbody></tbody></table>
<h2>Events</h2>
<table id="events"><thead><tr><th>time (UTC)</th><th>node</th><th>kind</th><th>app</th><th>took</th><th>message</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
function bytes(n) {
  if (n == null) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
function dur(s) {
  if (s == null) return "-";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text == null ? "-" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}
function fill(id, rows, cols, empty) {
  const body = document.querySelector("#" + id + " tbody");
  body.textContent = "";
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, empty, "empty");
    tr.firstChild.colSpan = cols;
    body.appendChild(tr);
  }
  for (const r of rows) body.appendChild(r);
}
function nodeRow(n) {
  const tr = document.createElement("tr");
  tr.className = "node " + (n.reachable && n.state === "online" ? "up" : "down");
  tr.dataset.node = n.id;
  cell(tr, "node " + n.id);
  cell(tr, n.reachable ? n.state : n.state + " (no answer" + (n.error ? ": " + n.error : "") + ")");
  cell(tr, n.address);
  cell(tr, n.load ? n.load.map(x => x.toFixed(2)).join(" ") : null);
  if (n.memoryTotalBytes) {
    const used = n.memoryTotalBytes - n.memoryAvailableBytes;
    const span = document.createElement("span");
    const bar = document.createElement("span");
    bar.className = "bar"; bar.style.width = Math.round(60 * used / n.memoryTotalBytes) + "px";
    span.appendChild(bar); span.appendChild(document.createTextNode(bytes(used) + " / " + bytes(n.memoryTotalBytes)));
    cell(tr, span);
  } else cell(tr, null);
  cell(tr, n.applications); cell(tr, n.checkpoints); cell(tr, n.restarts);
  cell(tr, n.uptimeSeconds == null ? null : dur(n.uptimeSeconds));
  cell(tr, n.dashboard);
  return tr;
}
function appRow(a) {
  const tr = document.createElement("tr");
  tr.className = "app"; tr.dataset.app = a.app;
  cell(tr, a.app); cell(tr, "node " + a.node); cell(tr, a.state); cell(tr, bytes(a.memoryBytes));
  cell(tr, a.lastVersion == null ? null : "v" + a.lastVersion); cell(tr, a.checkpoints); cell(tr, a.restarts);
  cell(tr, a.command, "cmd");
  return tr;
}
function eventRow(e) {
  const tr = document.createElement("tr");
  tr.className = "event " + e.kind + (/-failed$|^error$/.test(e.kind) ? " failure" : "");
  cell(tr, new Date(e.time * 1000).toISOString().replace("T", " ").slice(0, 23));
  cell(tr, "node " + e.node); cell(tr, e.kind); cell(tr, e.app); cell(tr, e.seconds == null ? null : dur(e.seconds));
  cell(tr, e.message, "msg");
  return tr;
}
async function refresh() {
  try {
    const r = await fetch("/api/cluster?limit=100", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const c = await r.json();
    const up = c.nodes.filter(n => n.reachable && n.state === "online").length;
    document.getElementById("status").textContent =
      up + " of " + c.nodes.length + " nodes up; asked node " + c.node + " at " + new Date(c.time * 1000).toISOString();
    fill("nodes", c.nodes.map(nodeRow), 10, "no nodes");
    fill("apps", c.applications.map(appRow), 8, "no applications known");
    fill("events", c.events.slice().reverse().map(eventRow), 6, "no events yet");
  } catch (err) {
    document.getElementById("status").textContent = "this node does not answer: " + err.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""#
}
