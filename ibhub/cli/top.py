"""``ibhub top``: a live terminal dashboard of a running hub.

Built on the SDK: an :class:`~ibhub.client.AsyncHub` (operator role, so it may list
every script's orders: the SDK reads the hub's operator token when run as the hub's
user, or the CURVE key must be listed as an operator; without it ``top`` runs
read-only and says why the orders are missing) asks for the hub's status once per
refresh; tick rates are
the change in each subscription's tick count between two status replies divided by
the time between them (no PUB traffic needed, so ``top`` costs the hub one request
per second). Recent orders come from the order requests when the hub serves them;
the pacing queue and recent alerts from ``/health`` when its HTTP port answers.
Each part that is missing says so instead of failing the whole frame.

Plain ANSI, no curses or extra dependency: the frame is redrawn from the top-left
corner, each line cleared to its end, and the rest of the screen cleared, which
refreshes in place without flicker. ``--once`` prints one plain frame (two status
samples ``--interval`` apart, so rates are real) and exits: scripts and tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

import click

from ibhub import wire
from ibhub.protocol import OrderInfo, StatusReply

HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[H", "\x1b[K", "\x1b[J"
MAX_ORDERS = 8
MAX_ALERTS = 5


@dataclass
class Sample:
    """One refresh worth of data."""

    at: float  # monotonic
    status: StatusReply
    orders: list[OrderInfo] | None = None
    orders_note: str = ""
    health: dict[str, Any] | None = None
    health_note: str = ""
    rates: dict[str, float] = field(default_factory=dict)


def tick_rates(prev: Sample | None, cur: Sample) -> dict[str, float]:
    """Ticks per second per topic between two samples (topics new in ``cur`` are 0)."""
    if prev is None or cur.at <= prev.at:
        return {}
    before = {s.topic: s.ticks for s in prev.status.subscriptions}
    span = cur.at - prev.at
    return {s.topic: max(0, s.ticks - before.get(s.topic, s.ticks)) / span
            for s in cur.status.subscriptions}


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if d or h else "") + f"{m:02d}m{s:02d}s"


def _clock(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S")


def render(sample: Sample, endpoint: str, now: float | None = None) -> list[str]:
    """The frame as lines of text (no escape codes)."""
    st = sample.status
    now = time.time() if now is None else now
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    mode = ""
    if st.accounts:
        mode = " (paper)" if all(a.startswith("D") for a in st.accounts) else " (LIVE)"
    out = [
        f"ibhub top  {endpoint}  {stamp}",
        f"upstream   {st.state}  {st.host}:{st.port} client {st.client_id}"
        + (f"  server v{st.server_version}" if st.server_version else "")
        + (f"  accounts {','.join(st.accounts)}{mode}" if st.accounts else ""),
        f"uptime     {_duration(st.uptime_seconds)}   connected since {_clock(st.connected_at)}"
        f"   reconnects {st.reconnect_count}   last tick "
        + (f"{max(0.0, now - st.last_tick_at):.1f}s ago" if st.last_tick_at else "-"),
        f"leases     {len(st.leases)}   lines {st.lines_used}/{st.lines_max}"
        f"   raw ids {len(st.raw_client_ids)}",
    ]
    h = sample.health
    if h is not None and h.get("pacing"):
        p = h["pacing"]
        queue = " ".join(f"{k} {v}" for k, v in p["queue"].items())
        out.append(f"pacing     queue {queue}   sent {p['sent']}"
                   f"   max wait {p['max_wait_seconds']:.3f}s")
    elif h is not None:
        out.append("pacing     (no order service: nothing paced)")
    else:
        out.append(f"pacing     n/a ({sample.health_note})")
    if h is not None:
        out.append(f"health     {h['status']}" + (f": {'; '.join(h['reasons'])}"
                                                   if h.get("reasons") else ""))

    total = sum(sample.rates.values())
    out += ["", f"SUBSCRIPTIONS ({len(st.subscriptions)}, {total:.1f} ticks/s)",
            f"{'topic':<24} {'con_id':>10} {'kind':<6} {'subs':>4} {'ticks':>10} {'rate/s':>8}"]
    for s in sorted(st.subscriptions, key=lambda s: s.topic):
        rate = sample.rates.get(s.topic)
        out.append(f"{s.topic:<24} {s.con_id:>10} {s.kind:<6} {s.subscribers:>4} {s.ticks:>10} "
                   f"{'-' if rate is None else f'{rate:.1f}':>8}")

    out += ["", f"LEASES ({len(st.leases)})",
            f"{'name':<24} {'role':<9} {'client_id':>9} {'subs':>4} {'age':>10}"]
    for ls in sorted(st.leases, key=lambda x: x.name):
        out.append(f"{ls.name[:24]:<24} {ls.role:<9} {ls.client_id:>9} {ls.subscriptions:>4} "
                   f"{_duration(ls.age_seconds):>10}")

    out += ["", "RECENT ORDERS"]
    if sample.orders is None:
        out.append(f"  n/a ({sample.orders_note})")
    elif not sample.orders:
        out.append("  none")
    else:
        out.append(f"{'order_id':>8} {'owner':<16} {'symbol':<8} {'side':<4} {'qty':>8} "
                   f"{'type':<6} {'status':<13} {'filled':>8} {'avg':>10}")
        for o in sample.orders:
            out.append(f"{o.order_id:>8} {o.owner[:16]:<16} {o.symbol[:8]:<8} {o.action:<4} "
                       f"{o.quantity:>8g} {o.order_type:<6} {o.status[:13]:<13} "
                       f"{o.filled:>8g} {o.avg_fill_price:>10.4g}")
    if h is not None and h.get("alerts"):
        out += ["", "RECENT ALERTS"]
        for a in h["alerts"][-MAX_ALERTS:]:
            out.append(f"  {_clock(a['ts'])} {a['kind']}: {a['message']}")
    return out


async def _orders(hub: Any, refused: str) -> tuple[list[OrderInfo] | None, str]:
    from ibhub.client import HubError

    if refused:
        return None, refused
    try:
        found: list[OrderInfo] = [*await hub.open_orders("all"),
                                  *await hub.completed_orders("all")]
    except HubError as exc:  # e.g. a hub without the order service
        return None, str(exc)
    found.sort(key=lambda o: o.order_id, reverse=True)
    return found[:MAX_ORDERS], ""


async def _health(http_port: int, timeout: float) -> tuple[dict[str, Any] | None, str]:
    if not http_port:
        return None, "no --http-port"
    import aiohttp

    url = f"http://127.0.0.1:{http_port}/health"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(url) as resp:
            return json.loads(await resp.text()), ""
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return None, f"{url}: {exc or type(exc).__name__}"


async def _sample(hub: Any, refused: str, http_port: int, timeout: float) -> Sample:
    status = await hub.status()
    sample = Sample(at=time.monotonic(), status=status)
    sample.orders, sample.orders_note = await _orders(hub, refused)
    sample.health, sample.health_note = await _health(http_port, timeout)
    return sample


async def run_top(rpc: str | None, pub: str | None, http_port: int, interval: float,
                  once: bool, timeout: float, out: Any) -> None:
    from ibhub.client import AsyncHub, HubError
    from ibhub.client.contracts import run_name
    from ibhub.client.names import new_secret
    from ibhub.protocol import ErrorCode

    endpoint = wire.rpc_endpoint(rpc)
    # A name of this process only, its secret in memory: the tool places no orders, and
    # a fixed name would be bound to the first user who ran it (docs/security.md).
    options: dict[str, Any] = dict(name=run_name("ibhub-top"), name_secret=new_secret(),
                                   connect_timeout=timeout, connect_retries=1,
                                   request_timeout=timeout)
    hub = AsyncHub(pub, rpc, role="operator", **options)
    refused = ""
    try:
        await hub.connect()
    except HubError as exc:
        if exc.code != ErrorCode.FORBIDDEN:
            raise
        hub = AsyncHub(pub, rpc, role="readonly", **options)  # status needs no role
        await hub.connect()
        refused = f"every script's orders need the operator role: {exc.message}"
    try:
        prev = await _sample(hub, refused, http_port, timeout)
        while True:
            await asyncio.sleep(interval)
            cur = await _sample(hub, refused, http_port, timeout)
            cur.rates = tick_rates(prev, cur)
            lines = render(cur, endpoint)
            if once:
                out.write("\n".join(lines) + "\n")
                return
            out.write(HOME + "".join(line + CLEAR_EOL + "\n" for line in lines) + CLEAR_EOS)
            out.flush()
            prev = cur
    finally:
        await hub.close()


@click.command("top")
@click.option("--rpc", default=None, metavar="ENDPOINT",
              help=f"hub request endpoint [env IBHUB_RPC, default {wire.DEFAULT_RPC}]")
@click.option("--pub", default=None, metavar="ENDPOINT",
              help=f"hub publish endpoint [env IBHUB_PUB, default {wire.DEFAULT_PUB}]")
@click.option("--http-port", type=int, default=8570, envvar="IBHUB_HTTP_PORT",
              show_default=True, help="the hub's /health port (pacing, alerts); 0 = skip")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one frame and exit")
@click.option("--timeout", type=float, default=3.0, show_default=True,
              help="seconds to wait for the hub")
def top(rpc: str | None, pub: str | None, http_port: int, interval: float, once: bool,
        timeout: float) -> None:
    """Live dashboard: upstream, leases, subscriptions with tick rates, orders, pacing."""
    import sys

    from ibhub.client import HubError

    if interval <= 0:
        raise click.BadParameter("must be > 0", param_hint="--interval")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_top(rpc, pub, http_port, interval, once, timeout, sys.stdout))
    except HubError as exc:
        raise click.ClickException(f"hub at {wire.rpc_endpoint(rpc)}: {exc}") from None
