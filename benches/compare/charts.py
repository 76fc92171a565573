#!/usr/bin/env python3
"""One SVG bar chart per scenario from results.json (written by
compare.py): the proxy's CPU time per message (per session for churn, RSS
per connection for the idle test), one bar per proxy. Standard library
only.

Usage: charts.py results.json OUT_DIR
"""

import json
import os
import sys
from xml.sax.saxutils import escape

COLOURS = {
    "nginx": "#009639",
    "haproxy": "#1f6fb2",
    "wsgate-frames": "#d9661f",
    "wsgate-tunnel": "#f0a33a",
    "direct": "#8c8c8c",
}


def figure(kind, row):
    if kind == "idle":
        return row.get("rss_per_conn_kib") if row["proxy"] != "direct" else None
    return row.get("cpu_us")


def chart(sid, scenario, machine):
    kind = scenario["kind"]
    rows = [r for r in scenario["rows"] if r["proxy"] != "direct"]
    unit = {"idle": "KiB of proxy RSS per idle connection",
            "churn": "µs of proxy CPU per session"}.get(kind, "µs of proxy CPU per message")
    values = [(r["proxy"], figure(kind, r)) for r in rows]
    known = [v for _, v in values if v is not None]
    top = max(known) if known else 1.0
    nginx = next((v for p, v in values if p == "nginx"), None)

    width, left, right = 760, 150, 150
    bar_h, gap, head = 30, 14, 64
    height = head + len(values) * (bar_h + gap) + 40
    span = width - left - right
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{escape(scenario["title"])}</text>',
           f'<text x="{left}" y="42" fill="#444">{escape(unit)} — lower is better</text>']
    for i, (proxy, value) in enumerate(values):
        y = head + i * (bar_h + gap)
        out.append(f'<text x="{left - 8}" y="{y + bar_h / 2 + 5}" text-anchor="end">{escape(proxy)}</text>')
        if value is None:
            out.append(f'<text x="{left + 4}" y="{y + bar_h / 2 + 5}" fill="#b00">no figure (see results.md)</text>')
            continue
        w = max(1.0, span * value / top)
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                   f'fill="{COLOURS.get(proxy, "#666")}"/>')
        label = f"{value:.2f}"
        if nginx:
            label += f"  ({value / nginx:.2f}× nginx)"
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + bar_h / 2 + 5}">{escape(label)}</text>')
    foot = f"{machine.get('cpu', '')}, {machine.get('started', '')}; proxy pinned to core 0, load on core 1"
    out.append(f'<text x="{left}" y="{height - 12}" fill="#777" font-size="11">{escape(foot)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: charts.py results.json OUT_DIR")
    with open(sys.argv[1]) as f:
        data = json.load(f)
    os.makedirs(sys.argv[2], exist_ok=True)
    for sid, scenario in data["scenarios"].items():
        path = os.path.join(sys.argv[2], f"{sid}.svg")
        with open(path, "w") as f:
            f.write(chart(sid, scenario, data.get("machine", {})))


if __name__ == "__main__":
    main()
