"""The status page's HTML: pure functions from a snapshot dict to markup.

One renderer for both ways the page is seen: the server-rendered page (readable with
JavaScript off, refreshed by a ``<meta refresh>`` inside ``<noscript>``) and the live
updates, which carry the same section markup over server-sent events for the page's
small script to swap in (:mod:`ibhub.hub.ops.statuspage`). Charts are inline SVG drawn
here too, so there is nothing to build and nothing to fetch from elsewhere.

Everything that comes from outside the hub (script names, symbols, alert and IB
messages) goes through :func:`html.escape`; the page sets a strict
Content-Security-Policy besides (scripts and styles only from the hub itself).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import Any

SECTIONS = ("upstream", "rates", "instruments", "leases", "orders", "pacer", "alerts")
CHART_W, CHART_H = 240, 48


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def clock(ts: float | None) -> str:
    """Unix time as UTC ``HH:MM:SS.mmm`` (``-`` for none)."""
    if not ts:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def stamp(ts: float | None) -> str:
    """Unix time as ``YYYY-MM-DD HH:MM:SS UTC`` (``-`` for none)."""
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def span(seconds: float | None) -> str:
    """A duration in words: ``0.4 s``, ``12 s``, ``5 min 3 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def table(head: Sequence[str], rows: Iterable[Sequence[str]], empty: str,
          cls: str = "") -> str:
    """A table of already-escaped cells, or a paragraph saying ``empty``."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def sparkline(values: Sequence[float], label: str, unit: str) -> str:
    """A small inline SVG line chart of ``values`` (oldest first), with its last value."""
    now = values[-1] if values else 0.0
    top = max(values, default=0.0) or 1.0
    n = max(len(values) - 1, 1)
    pts = " ".join(
        f"{i * CHART_W / n:.1f},{CHART_H - 2 - (v / top) * (CHART_H - 4):.1f}"
        for i, v in enumerate(values))
    line = f'<polyline class="line" points="{pts}"/>' if len(values) > 1 else ""
    return (
        f'<figure class="chart"><figcaption>{esc(label)}: <b>{now:,.1f}</b> {esc(unit)}'
        f' <small>(max {top:,.1f}, last {len(values)} s)</small></figcaption>'
        f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" '
        f'role="img" aria-label="{esc(label)}">'
        f'<rect class="frame" x="0" y="0" width="{CHART_W}" height="{CHART_H}"/>{line}</svg>'
        f"</figure>")


# ------------------------------------------------------------------------- sections


def upstream(d: dict[str, Any]) -> str:
    up = d["upstream"]
    ok = up["state"] == "CONNECTED"
    badge = "up" if ok else "down"
    word = "connected" if ok else "not connected"
    since = d.get("state_since")
    health = d["status"]
    reasons = "".join(f"<li>{esc(r)}</li>" for r in d["reasons"])
    history = table(
        ("when (UTC)", "state", "what happened"),
        ((esc(stamp(h["ts"])), esc(h["state"]), esc(h["message"]))
         for h in reversed(d.get("history", []))),
        "no state changes yet")
    accounts = ", ".join(up["accounts"]) or "-"
    return (
        f'<div id="upstream-state" class="badge {badge}" data-state="{esc(up["state"])}">'
        f'Gateway {esc(up["host"])}:{esc(up["port"])}: <b>{esc(up["state"])}</b> ({word})'
        f"</div>"
        f'<p class="since">since <span id="state-since">{esc(stamp(since))}</span> '
        f'({esc(span(d["now"] - since if since else None))}); '
        f'{esc(d["reconnect_count"])} reconnect(s); client id {esc(up["client_id"])}, '
        f'server version {esc(up["server_version"] or "-")}, accounts {esc(accounts)}; '
        f'hub up {esc(span(d["uptime_seconds"]))}</p>'
        f'<p>health: <b id="health" class="health {esc(health)}">{esc(health)}</b></p>'
        + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + f"<h3>Reconnect history</h3>{history}")


def rates(d: dict[str, Any]) -> str:
    r = d["rates"]
    return (sparkline(r["ticks"], "ticks in", "/s")
            + sparkline(r["requests"], "requests", "/s"))


def instruments(d: dict[str, Any]) -> str:
    now = d["now"]
    rows = []
    for i in d["instruments"]:
        age = now - i["last_tick_at"] if i["last_tick_at"] else None
        stale = age is None or age > d["stale_after"] > 0
        rows.append((
            esc(i["topic"]), f'<b>{esc(i["symbol"])}</b>', esc(i["kind"]),
            esc(i["subscribers"]), f'{i["ticks"]:,}',
            f'<span class="tick-time" data-ts="{i["last_tick_at"] or 0}">'
            f'{esc(clock(i["last_tick_at"]))}</span>',
            f'<span class="{"stale" if stale else "fresh"}">{esc(span(age))}</span>'))
    budget = (f'<p>market-data lines: <b id="lines">{d["lines_used"]} / {d["lines_max"]}'
              f'</b> used</p>')
    return budget + table(
        ("topic", "symbol", "kind", "subscribers", "ticks", "last tick (UTC)", "age"),
        rows, "no subscriptions", "instruments")


def leases(d: dict[str, Any]) -> str:
    rows = ((f'<b>{esc(g["name"])}</b>', esc(g["leases"]), esc(", ".join(g["roles"])),
             esc(", ".join(str(c) for c in g["client_ids"]) or "-"), esc(g["subscriptions"]),
             esc(span(g["oldest_age"])))
            for g in d["lease_groups"])
    raw = d["raw_client_ids"]
    tail = (f'<p>raw client ids (<code>ibhub lease</code>): {esc(", ".join(map(str, raw)))}'
            "</p>" if raw else "")
    return table(("script", "leases", "role", "client ids", "subscriptions", "oldest"),
                 rows, "no scripts connected") + tail


def orders(d: dict[str, Any]) -> str:
    o = d["orders"]
    if o is None:
        return '<p class="empty">trading off (orders = false: a data-only hub)</p>'
    head = f'<p>trading: <b>{esc(o["trading"])}</b>; {len(o["working"])} working</p>'

    def price(r: dict[str, Any]) -> str:
        return "-" if r["limit_price"] is None else f'{r["limit_price"]:g}'

    rows = ((esc(r["order_id"]), esc(r["owner"]), esc(r["symbol"]), esc(r["action"]),
             f'{r["quantity"]:g}', esc(r["order_type"]), esc(price(r)),
             esc(r["status"]), f'{r["filled"]:g}')
            for r in o["working"])
    return head + table(("id", "script", "symbol", "side", "qty", "type", "limit", "status",
                         "filled"), rows, "no working orders")


def pacer(d: dict[str, Any]) -> str:
    p = d["pacing"]
    if not p:
        return '<p class="empty">no pacer</p>'
    queues = ", ".join(f"{esc(k)} {v}" for k, v in sorted(p["queue"].items()))
    return (f'<p>queued: <b id="pacer-queued">{p["queued"]}</b> ({queues}); '
            f'sent {p["sent"]:,}; refused busy {p["refused"]:,} '
            f'({p["refused_recently"]} recently); a new order would wait '
            f'{p["expected_order_delay"]:.2f} s (limit {esc(p.get("max_order_delay"))} s); '
            f'longest wait {p["max_wait_seconds"]:.2f} s</p>')


def alerts(d: dict[str, Any]) -> str:
    rows = ((esc(clock(a.get("ts"))), esc(a.get("kind", "")), esc(a.get("message", "")))
            for a in reversed(d["alerts"]))
    counts = ", ".join(f"{esc(k)} {v}" for k, v in sorted(d["alert_counts"].items()) if v)
    return (f"<p>raised so far: {counts or 'none'}</p>"
            + table(("time (UTC)", "kind", "message"), rows, "no alerts"))


RENDER = {"upstream": upstream, "rates": rates, "instruments": instruments,
          "leases": leases, "orders": orders, "pacer": pacer, "alerts": alerts}
TITLES = {"upstream": "Upstream", "rates": "Rates", "instruments": "Instruments",
          "leases": "Scripts", "orders": "Working orders", "pacer": "Pacer queue",
          "alerts": "Recent alerts"}


def sections(d: dict[str, Any]) -> dict[str, str]:
    """Each section's inner HTML."""
    return {name: RENDER[name](d) for name in SECTIONS}


def title(d: dict[str, Any]) -> str:
    mark = "\u25cf" if d["upstream"]["state"] == "CONNECTED" else "\u25cb"
    return f"{mark} ibhub {d['upstream']['state']}"


def page(d: dict[str, Any], version: str) -> str:
    """The whole page, server-rendered (what a browser without JavaScript shows)."""
    body = "".join(
        f'<section id="s-{name}"><h2>{esc(TITLES[name])}</h2>'
        f'<div class="body" id="{name}">{inner}</div></section>'
        for name, inner in sections(d).items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title(d))}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="static/status.css">'
        '<link rel="icon" href="static/favicon.svg" type="image/svg+xml">'
        '<noscript><meta http-equiv="refresh" content="5"></noscript>'
        '<script src="static/status.js" defer></script></head><body>'
        f'<header><h1>ibhub <small>{esc(version)}</small></h1>'
        '<span id="live" class="live off" title="live updates">'
        "static page (reloads every 5 s)</span>"
        f'<span class="updated">as of <span id="asof">{esc(clock(d["now"]))}</span> UTC</span>'
        '<nav><a href="health">/health</a> <a href="metrics">/metrics</a> '
        '<a href="status.json">/status.json</a></nav></header>'
        f"<main>{body}</main></body></html>")
