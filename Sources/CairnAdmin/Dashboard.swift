/// The live dashboard: one static page that polls /api/status every two seconds and
/// draws members, ring ownership, storage, throughput, ingests and backlogs. No external
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
  .kpis { display: flex; gap: 32px; }
  .kpis div span { display: block; color: #5a6475; font-size: 12px; }
  #error { color: #c8453c; }
  svg text { font-size: 11px; fill: #5a6475; }
</style>
</head>
<body>
<header><h1>Cairn</h1><span class="meta" id="summary">loading…</span><span class="meta" id="updated"></span><span id="error"></span></header>
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
    <div><span>active ingests</span><b class="big" id="king">–</b></div>
    <div><span>repair backlog</span><b class="big" id="krep">–</b></div>
  </div></section>
  <section class="wide"><h2>Throughput (last 5 minutes, MiB/s)</h2><svg id="tput" width="100%" height="160" viewBox="0 0 900 160" preserveAspectRatio="none"></svg></section>
</main>
<script>
const colors = ["#4a78c2", "#2e9d5b", "#d99a1e", "#9b59b6", "#c8453c", "#16a2b8", "#7f8c8d", "#e67e22"];
let last = null, history = [];
const fmtBytes = b => { const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0; while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; } return b.toFixed(i ? 1 : 0) + " " + u[i]; };
const pct = x => (100 * x).toFixed(1) + "%";
const rate = r => r == null ? "–" : (r / 1048576).toFixed(1) + " MiB/s";
function el(tag, attrs, text) { const e = document.createElementNS(tag === "svgtext" ? "http://www.w3.org/2000/svg" : "http://www.w3.org/2000/svg", tag === "svgtext" ? "text" : tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text != null) e.textContent = text; return e; }
function render(s) {
  const now = Date.now() / 1000;
  const rates = {};
  let tin = 0, tout = 0, ing = 0, rep = 0;
  for (const m of s.members) {
    const prev = last && last.members.find(p => p.id === m.id);
    if (prev && m.usage && prev.usage) {
      const dt = s.time - last.time;
      if (dt > 0) rates[m.id] = { in: Math.max(0, (m.usage.bytesReceived - prev.usage.bytesReceived) / dt), out: Math.max(0, (m.usage.bytesSent - prev.usage.bytesSent) / dt) };
    }
    if (rates[m.id]) { tin += rates[m.id].in; tout += rates[m.id].out; }
    if (m.usage) ing += m.usage.activeIngests;
    rep += m.repairBacklog || 0;
  }
  document.getElementById("summary").textContent = `node ${s.node} · ${s.members.length} member${s.members.length === 1 ? "" : "s"}` + (s.cluster ? ` · replicas ${s.replicas}, write quorum ${s.writeQuorum}` : " · single node");
  document.getElementById("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
  const body = document.querySelector("#members tbody");
  body.replaceChildren(...s.members.map(m => {
    const tr = document.createElement("tr");
    tr.dataset.member = m.id;
    const u = m.usage;
    const r = rates[m.id];
    const disk = u && u.diskCapacityBytes ? u.diskUsedBytes / u.diskCapacityBytes : 0;
    const cells = [m.id, null, pct(m.ownership), pct(m.replicaShare), u ? u.blobs : "–", u ? fmtBytes(u.storedBytes) : "–", null,
      u ? u.activeIngests : "–", r ? rate(r.in) : "–", r ? rate(r.out) : "–", m.repairBacklog ?? "–", m.hintsPending ?? "–"];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (i === 1) { td.className = "state"; td.innerHTML = `<span class="badge ${m.state}">${m.state}</span>`; }
      else if (i === 6) { td.innerHTML = u ? `<span class="bar"><span style="width:${(100 * disk).toFixed(0)}%"></span></span> ${pct(disk)}` : "–"; }
      else td.textContent = c;
      tr.appendChild(td);
    });
    return tr;
  }));
  // Ring ownership as one stacked bar per member share, with labels.
  const ring = document.getElementById("ring");
  ring.replaceChildren();
  let x = 10;
  s.members.forEach((m, i) => {
    const w = 400 * m.ownership;
    ring.appendChild(el("rect", { x, y: 20, width: Math.max(w, 0.5), height: 40, fill: colors[i % colors.length] }));
    ring.appendChild(el("rect", { x: 10, y: 80 + 16 * i, width: 10, height: 10, fill: colors[i % colors.length] }));
    ring.appendChild(el("svgtext", { x: 26, y: 89 + 16 * i }, `${m.id}: ${pct(m.ownership)} primary, ${pct(m.replicaShare)} replica`));
    x += w;
  });
  document.getElementById("kin").textContent = last ? rate(tin) : "–";
  document.getElementById("kout").textContent = last ? rate(tout) : "–";
  document.getElementById("king").textContent = ing;
  document.getElementById("krep").textContent = rep;
  if (last) history.push({ t: s.time, in: tin, out: tout });
  history = history.filter(h => s.time - h.t <= 300);
  const svg = document.getElementById("tput");
  svg.replaceChildren();
  const max = Math.max(1, ...history.map(h => Math.max(h.in, h.out) / 1048576));
  svg.appendChild(el("svgtext", { x: 4, y: 12 }, max.toFixed(1) + " MiB/s"));
  svg.appendChild(el("line", { x1: 0, y1: 150, x2: 900, y2: 150, stroke: "#ccc" }));
  for (const [key, color] of [["in", "#4a78c2"], ["out", "#2e9d5b"]]) {
    const pts = history.map(h => `${(900 - (s.time - h.t) * 3).toFixed(1)},${(150 - 130 * (h[key] / 1048576) / max).toFixed(1)}`).join(" ");
    svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2 }));
    svg.appendChild(el("svgtext", { x: key === "in" ? 820 : 860, y: 12, fill: color }, key));
  }
  last = s;
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
