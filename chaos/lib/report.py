"""The timeline picture of a chaos run (SVG, no dependencies): every operation's latency over
time (log scale) and operations per second, with the fault windows shaded."""
import math
from xml.sax.saxutils import escape

W, LEFT, RIGHT = 1100, 70, 20
TOP_H, BOTTOM_H, GAP, HEAD = 300, 140, 40, 40
COLORS = {"write-ok": "#2a9d8f", "read-ok": "#457b9d", "contended": "#b0b0b0", "fail": "#e63946", "unknown": "#f4a261"}


def category(e):
    o = e.get("outcome")
    if o in ("ok", "already"):
        return f"{e['kind']}-ok"
    if o in ("locked", "not-found"):
        return "contended"
    return "fail" if o == "fail" else "unknown"


def timeline_svg(events, title):
    ops = [e for e in events if e.get("kind") in ("write", "read") and e.get("invoke") and e.get("complete")]
    faults = [e for e in events if e.get("kind") == "fault"]
    heal = next((e["start"] for e in events if e.get("kind") == "heal"), None)
    if not ops:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25">{escape(title)}: no operations</text></svg>'
    t0 = min(e["invoke"] for e in ops)
    t1 = max([e["complete"] for e in ops] + ([heal] if heal else []))
    span = max(t1 - t0, 1)
    plot_w = W - LEFT - RIGHT

    def x(t):
        return LEFT + (t - t0) / span * plot_w

    lo, hi = math.log10(0.001), math.log10(max(60.0, max(e["complete"] - e["invoke"] for e in ops)))

    def y(lat):
        v = math.log10(min(max(lat, 0.001), 10 ** hi))
        return HEAD + TOP_H - (v - lo) / (hi - lo) * TOP_H

    height = HEAD + TOP_H + GAP + BOTTOM_H + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>']
    bottom_top = HEAD + TOP_H + GAP
    for i, f in enumerate(faults):
        fx0, fx1 = x(f["start"]), x(f["stop"])
        out.append(f'<rect x="{fx0:.1f}" y="{HEAD}" width="{max(fx1 - fx0, 1):.1f}" height="{TOP_H + GAP + BOTTOM_H}" fill="#ffd166" opacity="0.35"/>')
        out.append(f'<text x="{fx0 + 3:.1f}" y="{HEAD + 12 + 12 * (i % 3)}" fill="#8a5a00">{escape(f.get("name", "fault"))}</text>')
    if heal:
        out.append(f'<line x1="{x(heal):.1f}" x2="{x(heal):.1f}" y1="{HEAD}" y2="{bottom_top + BOTTOM_H}" stroke="#333" stroke-dasharray="4,3"/>')
        out.append(f'<text x="{x(heal) - 3:.1f}" y="{bottom_top + BOTTOM_H - 4}" text-anchor="end">healed</text>')
    # Latency panel.
    out.append(f'<rect x="{LEFT}" y="{HEAD}" width="{plot_w}" height="{TOP_H}" fill="none" stroke="#999"/>')
    for p in range(int(math.floor(lo)), int(math.ceil(hi)) + 1):
        yy = y(10 ** p)
        label = f"{10 ** p * 1000:g} ms" if p < 0 else f"{10 ** p:g} s"
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
    for e in ops:
        c = COLORS[category(e)]
        out.append(f'<circle cx="{x(e["complete"]):.1f}" cy="{y(e["complete"] - e["invoke"]):.1f}" r="1.8" fill="{c}" opacity="0.7"/>')
    out.append(f'<text x="{LEFT}" y="{HEAD - 4}">latency of each operation (at its completion)</text>')
    # Throughput panel: completions per second by category.
    secs = int(math.ceil(span)) + 1
    counts = {k: [0] * secs for k in COLORS}
    for e in ops:
        counts[category(e)][min(secs - 1, int(e["complete"] - t0))] += 1
    peak = max(1, max(sum(counts[k][s] for k in COLORS) for s in range(secs)))
    bar_w = plot_w / secs
    for s in range(secs):
        base = bottom_top + BOTTOM_H
        for k in COLORS:
            h = counts[k][s] / peak * BOTTOM_H
            if h > 0:
                out.append(f'<rect x="{LEFT + s * bar_w:.1f}" y="{base - h:.1f}" width="{max(bar_w - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{COLORS[k]}"/>')
                base -= h
    out.append(f'<rect x="{LEFT}" y="{bottom_top}" width="{plot_w}" height="{BOTTOM_H}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{LEFT}" y="{bottom_top - 4}">operations completed per second (peak {peak})</text>')
    for s in range(0, secs, max(1, secs // 12)):
        out.append(f'<text x="{LEFT + s * bar_w:.1f}" y="{bottom_top + BOTTOM_H + 14}" text-anchor="middle">{s} s</text>')
    lx = LEFT
    for k, c in COLORS.items():
        out.append(f'<rect x="{lx}" y="{height - 18}" width="10" height="10" fill="{c}"/><text x="{lx + 14}" y="{height - 9}">{k}</text>')
        lx += 110
    out.append(f'<rect x="{lx}" y="{height - 18}" width="10" height="10" fill="#ffd166" opacity="0.6"/><text x="{lx + 14}" y="{height - 9}">fault window</text>')
    out.append("</svg>")
    return "\n".join(out)
