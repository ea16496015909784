/// The live dashboard: one static page that polls /api/status every two seconds and
/// draws a banner of what needs attention (not ready, dead members and under-replication,
/// owed copies), members, ring ownership, storage, throughput, this node's request and error
/// rates and latency per method, ingests, backlogs, version and uptime. No external
/// scripts or fonts: it must work on an air-gapped admin network.
enum Dashboard {
  static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Cairn dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 12px 24px; display: flex; gap: 24px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { opacity: .8; }
  main { padding: 16px 24px; display: grid; gap: 16px; grid-template-columns: 1fr 1fr; }
  section { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  section.wide { grid-column: 1 / 3; }
  h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em; color: #5a6475; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid #eceef2; white-space: nowrap; }
  th:first-child, td:first-child, td.state, th.state { text-align: left; }
  .badge { padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff; }
  .alive { background: #2e9d5b; } .suspect { background: #d99a1e; } .dead, .unreachable { background: #c8453c; }
  .bar { background: #eceef2; border-radius: 3px; height: 8px; width: 120px; display: inline-block; vertical-align: middle; }
  .bar > span { display: block; height: 100%; border-radius: 3px; background: #4a78c2; }
  .big { font-size: 28px; font-weight: 600; }
  .kpis { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px 32px; }
  #banner div { padding: 8px 24px; color: #fff; }
  #banner .critical { background: #c8453c; } #banner .warning { background: #d99a1e; } #banner .healthy { background: #2e9d5b; }
  .meta { color: #5a6475; font-weight: normal; text-transform: none; letter-spacing: 0; }
  header .meta { color: #fff; }
  .kpis div span { display: block; color: #5a6475; font-size: 12px; }
  #error { color: #c8453c; }
  svg text { font-size: 11px; fill: #5a6475; }
</style>
</head>
<body>
<header><h1>Cairn</h1><span class="meta" id="summary">loading…</span><span class="meta" id="version"></span><span class="meta" id="updated"></span><span id="error"></span></header>
<div id="banner"></div>
<main>
  <section class="wide"><h2>Members</h2>
    <table id="members"><thead><tr>
      <th>node</th><th class="state">state</th><th>ring ownership</th><th>replica share</th><th>blobs</th><th>stored</th>
      <th>disk</th><th>active ingests</th><th>in</th><th>out</th><th>repair backlog</th><th>hints</th>
    </tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Ring ownership</h2><svg id="ring" width="100%" height="180" viewBox="0 0 420 180"></svg></section>
  <section><h2>Cluster</h2><div class="kpis">
    <div><span>throughput in</span><b class="big" id="kin">–</b></div>
    <div><span>throughput out</span><b class="big" id="kout">–</b></div>
    <div><span>requests/s (this node)</span><b class="big" id="kreq">–</b></div>
    <div><span>errors/s (this node)</span><b class="big" id="kerr">–</b></div>
    <div><span>blobs (all copies)</span><b class="big" id="kblobs">–</b></div>
    <div><span>stored (all copies)</span><b class="big" id="kstored">–</b></div>
    <div><span>active ingests</span><b class="big" id="king">–</b></div>
    <div><span>repair backlog</span><b class="big" id="krep">–</b></div>
    <div><span>hints owed</span><b class="big" id="khints">–</b></div>
  </div></section>
  <section class="wide"><h2>Throughput, whole cluster (last 5 minutes, MiB/s)</h2><svg id="tput" width="100%" height="170" viewBox="0 0 900 170" preserveAspectRatio="none"></svg></section>
  <section class="wide"><h2>Requests on this node <span class="meta" id="window"></span></h2>
    <table id="methods"><thead><tr><th>method</th><th>requests/s</th><th>errors/s</th><th>error %</th><th>p50</th><th>p99</th><th>calls since start</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
const colors = ["#4a78c2", "#2e9d5b", "#d99a1e", "#9b59b6", "#c8453c", "#16a2b8", "#7f8c8d", "#e67e22"];
const fmtBytes = b => { const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0; while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; } return b.toFixed(i ? 1 : 0) + " " + u[i]; };
const pct = x => (100 * x).toFixed(1) + "%";
const rate = r => r == null ? "–" : (r / 1048576).toFixed(1) + " MiB/s";
// Each node reports its own throughput history (bytes/s per sample, oldest first); the
// current rate is the mean of the last three samples.
const recent = a => a && a.length ? a.slice(-3).reduce((x, y) => x + y, 0) / Math.min(3, a.length) : null;
function svg(tag, attrs, text) { const e = document.createElementNS("http://www.w3.org/2000/svg", tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text != null) e.textContent = text; return e; }
function sumSeries(members, key) {
  const n = Math.max(0, ...members.map(m => m.usage ? m.usage[key].length : 0));
  const out = new Array(n).fill(0);
  for (const m of members) { if (!m.usage) continue; const a = m.usage[key]; a.forEach((v, i) => out[n - a.length + i] += v); }
  return out;
}
// Requests: each document holds this node's cumulative calls per method; rates and latency
// quantiles come from the difference with a document about ten seconds older (the first
// one alone: averages since start).
const history = [];
const dur = (secs, i, n) => i >= n ? "> " + fmtSecs(secs[n - 1]) : "≤ " + fmtSecs(secs[i]);
const fmtSecs = x => x < 1e-3 ? (x * 1e6).toFixed(0) + " µs" : x < 1 ? (x * 1e3).toFixed(x < 0.01 ? 1 : 0) + " ms" : x.toFixed(1) + " s";
function quantile(buckets, q, secs) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (!total) return "–";
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) { seen += buckets[i]; if (seen >= q * total) return dur(secs, i, secs.length); }
  return "–";
}
const shortMethod = m => { const name = m.split(".").pop(); return m.startsWith("containerd.v1.") ? name + " (seed)" : name; };
function uptime(started, now) {
  if (!started) return "";
  let s = Math.max(0, now - started), out = [];
  for (const [n, u] of [[86400, "d"], [3600, "h"], [60, "min"]]) if (s >= n || u === "min") { out.push(Math.floor(s / n) + " " + u); s %= n; }
  return out.slice(0, 2).join(" ");
}
function renderMethods(s) {
  // (The node serves one document a second: a poll may get the same one again.)
  if (!history.length || history[history.length - 1].time < s.time) history.push(s);
  while (history.length > 2 && s.time - history[1].time >= 10) history.shift();
  const base = history.length > 1 && history[0].time < s.time ? history[0] : null;
  const span = base ? s.time - base.time : Math.max(1, s.time - (s.startedAt || s.time - 1));
  document.getElementById("window").textContent = base ? `(last ${span.toFixed(0)} s)` : "(since start)";
  const secs = s.latencyBucketSeconds || [];
  let req = 0, err = 0;
  const rows = Object.entries(s.methods || {}).map(([name, m]) => {
    const b = base && base.methods && base.methods[name] || { calls: 0, errors: 0, buckets: m.buckets.map(() => 0) };
    const calls = m.calls - b.calls, errors = m.errors - b.errors;
    const buckets = m.buckets.map((v, i) => v - (b.buckets[i] || 0));
    req += calls / span; err += errors / span;
    return { name, rate: calls / span, erate: errors / span, epct: calls ? 100 * errors / calls : 0, p50: quantile(buckets, 0.5, secs), p99: quantile(buckets, 0.99, secs), total: m.calls };
  }).filter(r => r.total > 0).sort((a, b) => b.rate - a.rate || b.total - a.total).slice(0, 14);
  document.getElementById("kreq").textContent = req.toFixed(1);
  document.getElementById("kerr").textContent = err.toFixed(2);
  document.querySelector("#methods tbody").replaceChildren(...rows.map(r => {
    const tr = document.createElement("tr");
    tr.dataset.method = r.name;
    for (const [i, c] of [shortMethod(r.name), r.rate.toFixed(1), r.erate.toFixed(2), r.epct.toFixed(1) + "%", r.p50, r.p99, r.total].entries()) {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 0) td.title = r.name;
      tr.appendChild(td);
    }
    return tr;
  }));
}
function renderBanner(s) {
  const banner = document.getElementById("banner");
  const problems = s.problems || [];
  banner.replaceChildren(...(problems.length ? problems : [{ level: "healthy", text: "healthy: every member alive, no copies owed" }]).map(p => {
    const d = document.createElement("div");
    d.className = p.level;
    d.textContent = p.text;
    return d;
  }));
}
function render(s) {
  let ing = 0, rep = 0, hints = 0, blobs = 0, stored = 0;
  for (const m of s.members) {
    if (m.usage) { ing += m.usage.activeIngests; blobs += m.usage.blobs; stored += m.usage.storedBytes; }
    rep += m.repairBacklog || 0; hints += m.hintsPending || 0;
  }
  document.getElementById("version").textContent = (s.version ? "v" + s.version : "") + (s.startedAt ? " · up " + uptime(s.startedAt, s.time) : "");
  renderBanner(s);
  renderMethods(s);
  document.getElementById("kblobs").textContent = blobs;
  document.getElementById("kstored").textContent = fmtBytes(stored);
  document.getElementById("khints").textContent = hints;
  document.getElementById("summary").textContent = `node ${s.node} · ${s.members.length} member${s.members.length === 1 ? "" : "s"}` + (s.cluster ? ` · replicas ${s.replicas}, write quorum ${s.writeQuorum}` : " · single node") + (s.ready ? "" : " · NOT READY") + (s.security ? ` · ${s.security}` : "");
  document.getElementById("error").textContent = (s.security || "").startsWith("INSECURE") ? "INSECURE: every caller is trusted" : "";
  document.getElementById("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
  const body = document.querySelector("#members tbody");
  body.replaceChildren(...s.members.map(m => {
    const tr = document.createElement("tr");
    tr.dataset.member = m.id;
    const u = m.usage;
    const disk = u && u.diskCapacityBytes ? u.diskUsedBytes / u.diskCapacityBytes : 0;
    const cells = [m.id, null, pct(m.ownership), pct(m.replicaShare), u ? u.blobs : "–", u ? fmtBytes(u.storedBytes) : "–", null,
      u ? u.activeIngests : "–", u ? rate(recent(u.receivedPerSecond)) : "–", u ? rate(recent(u.sentPerSecond)) : "–", m.repairBacklog ?? "–", m.hintsPending ?? "–"];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (i === 1) { td.className = "state"; td.innerHTML = `<span class="badge ${m.state}">${m.state}</span>`; }
      else if (i === 6) { td.innerHTML = u ? `<span class="bar"><span style="width:${(100 * disk).toFixed(0)}%"></span></span> ${pct(disk)}` : "–"; }
      else td.textContent = c;
      tr.appendChild(td);
    });
    return tr;
  }));
  const ring = document.getElementById("ring");
  ring.replaceChildren();
  let x = 10;
  s.members.forEach((m, i) => {
    const w = 400 * m.ownership;
    ring.appendChild(svg("rect", { x, y: 20, width: Math.max(w, 0.5), height: 40, fill: colors[i % colors.length] }));
    ring.appendChild(svg("rect", { x: 10, y: 80 + 16 * i, width: 10, height: 10, fill: colors[i % colors.length] }));
    ring.appendChild(svg("text", { x: 26, y: 89 + 16 * i }, `${m.id}: ${pct(m.ownership)} primary, ${pct(m.replicaShare)} replica`));
    x += w;
  });
  const tin = sumSeries(s.members, "receivedPerSecond"), tout = sumSeries(s.members, "sentPerSecond");
  document.getElementById("kin").textContent = rate(recent(tin));
  document.getElementById("kout").textContent = rate(recent(tout));
  document.getElementById("king").textContent = ing;
  document.getElementById("krep").textContent = rep;
  const chart = document.getElementById("tput");
  chart.replaceChildren();
  const step = (s.members.find(m => m.usage) || { usage: { sampleSeconds: 2 } }).usage.sampleSeconds;
  const max = Math.max(1, ...tin.map(v => v / 1048576), ...tout.map(v => v / 1048576));
  chart.appendChild(svg("text", { x: 4, y: 12 }, max.toFixed(1) + " MiB/s"));
  chart.appendChild(svg("line", { x1: 0, y1: 150, x2: 900, y2: 150, stroke: "#ccc" }));
  // A tick a minute, from five minutes ago to now.
  for (let min = 5; min >= 0; min--) {
    const x = 900 - min * 60 * 3;
    chart.appendChild(svg("line", { x1: x, y1: 150, x2: x, y2: 154, stroke: "#999" }));
    chart.appendChild(svg("text", { x: Math.min(Math.max(x - 14, 2), 870), y: 166 }, min ? `-${min} min` : "now"));
  }
  const series = [[tin, "#4a78c2", "in: bytes received (uploads, replica copies)", 200], [tout, "#2e9d5b", "out: bytes sent (reads, replica copies)", 520]];
  for (const [values, color, label, lx] of series) {
    const pts = values.map((v, i) => `${(900 - (values.length - 1 - i) * step * 3).toFixed(1)},${(150 - 130 * (v / 1048576) / max).toFixed(1)}`).join(" ");
    chart.appendChild(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2 }));
    chart.appendChild(svg("rect", { x: lx - 14, y: 4, width: 10, height: 10, fill: color }));
    chart.appendChild(svg("text", { x: lx, y: 13, fill: color }, label));
  }
}
async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) { document.getElementById("error").textContent = "status unavailable: " + e.message; }
}
poll();
setInterval(poll, 2000);
</script>
</body>
</html>
"""#
}
