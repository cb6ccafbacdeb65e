"""``ibhub status``, ``ibhub tail`` and ``ibhub lease``: talk to a running hub.

Each finds the hub through ``--rpc`` / ``--pub``, else ``$IBHUB_RPC`` /
``$IBHUB_PUB``, else the defaults, and imports only the SDK (never ``ib_insync``).
A hub that requires CURVE is reached with ``$IBHUB_SERVER_KEY`` and
``$IBHUB_CLIENT_KEY_FILE`` (:mod:`ibhub.client.curve`).
``status`` and ``lease`` need no lease of their own: they are single requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import click
import msgspec
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.client import AsyncHub, HubError
from ibhub.client.contracts import run_name
from ibhub.client.curve import client_curve
from ibhub.client.names import new_secret
from ibhub.client.rpc import RpcChannel
from ibhub.keys import KeyFileError, read_operator_token
from ibhub.protocol import (
    TOPIC_BUNDLE,
    Bar,
    ClientIdLeased,
    ErrorEvent,
    Event,
    GetStatus,
    HubStatus,
    LeaseClientId,
    NameInfo,
    ReleaseClientId,
    Reply,
    Request,
    StatusReply,
    Tick,
)

rpc_option = click.option(
    "--rpc", default=None, metavar="ENDPOINT",
    help=f"hub request endpoint [env IBHUB_RPC, default {wire.DEFAULT_RPC}]",
)
pub_option = click.option(
    "--pub", default=None, metavar="ENDPOINT",
    help=f"hub publish endpoint [env IBHUB_PUB, default {wire.DEFAULT_PUB}]",
)
timeout_option = click.option(
    "--timeout", default=3.0, show_default=True, type=float, help="seconds to wait for the hub"
)


async def _one_request(rpc: str, request: Request, timeout: float) -> Reply:
    context = zmq.asyncio.Context()
    channel = RpcChannel(context, rpc, timeout=timeout, curve=client_curve())
    try:
        channel.open()
        return await channel.request(request)
    finally:
        await channel.close()
        context.term()


def _request_or_exit(rpc: str | None, request: Request, timeout: float) -> Reply:
    endpoint = wire.rpc_endpoint(rpc)
    try:
        return asyncio.run(_one_request(endpoint, request, timeout))
    except (HubError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None


# ---------------------------------------------------------------------------- status


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_status(status: StatusReply, endpoint: str) -> str:
    """The status reply as a few readable lines."""
    lines = [
        f"hub at {endpoint}: upstream {status.state}"
        f" ({'connected' if status.connected else 'not connected'})"
        f" to {status.host}:{status.port}, client id {status.client_id},"
        f" server version {status.server_version or '-'}",
        f"accounts: {', '.join(status.accounts) or '-'}",
        f"uptime {status.uptime_seconds:.1f} s, reconnects {status.reconnect_count},"
        f" connected at {_when(status.connected_at)}, last tick {_when(status.last_tick_at)}",
        f"market-data lines: {status.lines_used}/{status.lines_max}",
        f"market-depth books: {status.depth_used}/{status.depth_max}",
        f"leases ({len(status.leases)}):",
    ]
    for lease in status.leases:
        lines.append(
            f"  {lease.lease:<12} {lease.name:<24} {lease.role:<9} client id {lease.client_id:<5}"
            f" subscriptions {lease.subscriptions:<3} age {lease.age_seconds:.1f} s"
            + _keeping_up(lease.gaps, lease.lag_ms)
        )
    lines.append(f"subscriptions ({len(status.subscriptions)}):")
    for sub in status.subscriptions:
        lines.append(
            f"  {sub.topic:<20} conId {sub.con_id:<10} {sub.kind:<6}"
            f" {sub.subscribers} subscriber(s), {sub.ticks} event(s)"
        )
    raw = ", ".join(str(i) for i in status.raw_client_ids) or "-"
    lines.append(f"raw client ids: {raw}")
    lines.append(f"trading: {status.trading or 'unknown (older hub)'}")
    queue = ", ".join(f"{k} {v}" for k, v in status.upstream_queue.items()) or "-"
    lines.append(f"upstream queue: {queue}")
    if status.upstream_queue_max:  # back-pressure (hubs that report it)
        limit = f"limit {status.max_order_delay:g} s" if status.max_order_delay else "no orders"
        lines.append(
            f"order delay: {status.expected_order_delay:.2f} s expected now ({limit}),"
            f" longest wait {status.order_wait_max:.2f} s; waiting {status.upstream_queued}"
            f"/{status.upstream_queue_max} (per lease {status.upstream_queue_per_lease});"
            f" refused busy {status.busy_refusals}"
        )
    conns = ", ".join(
        f"{name} {c.get('open', 0)}/{c.get('max', 0)}"
        + (f" ({c['refused']} refused)" if c.get("refused") else "")
        + (" REFUSING" if c.get("refusing") else "")
        for name, c in status.connections.items()
    )
    if conns:
        lines.append(f"connections: {conns}")
    nats = status.nats
    if nats:  # the NATS bridge (docs/scale-out.md)
        lines.append(
            f"nats: {nats.get('state')} {nats.get('url') or ''} as hub {nats.get('hub')!r},"
            f" stream {nats.get('stream')}; published {nats.get('published', 0)},"
            f" unpublished {nats.get('unpublished', 0)}, reconnects"
            f" {nats.get('reconnects', 0)}, requests {nats.get('requests', 0)}"
            + (f"; last error: {nats['last_error']}" if nats.get("last_error") else ""))
    return "\n".join(lines)


@click.command()
@rpc_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="print the status reply as JSON")
def status(rpc: str | None, timeout: float, as_json: bool) -> None:
    """Show the hub's upstream state, leases and subscriptions."""
    reply = _request_or_exit(rpc, GetStatus(id=0), timeout)
    if not isinstance(reply, StatusReply):
        raise click.ClickException(f"unexpected reply {type(reply).__name__} to a status request")
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(reply), indent=2, sort_keys=True))
    else:
        click.echo(format_status(reply, wire.rpc_endpoint(rpc)))


# ---------------------------------------------------------------------------- lease


@click.command()
@rpc_option
@timeout_option
@click.option("--name", default="ibhub-lease", show_default=True, help="who holds the id")
@click.option("--ttl", default=0.0, type=float,
              help="seconds until it frees itself (0: the hub's raw_lease_ttl, 24 h by default)")
@click.option("--release", "release_id", type=int, default=None, metavar="ID",
              help="give back a raw client id instead of leasing one (needs --token, or "
                   "the hub's operator token file readable by you)")
@click.option("--renew", "renew", is_flag=True,
              help="extend the raw id --token names by --ttl (or the default) from now")
@click.option("--token", default=None, metavar="TOKEN",
              help="the raw id's token, printed when it was leased [env IBHUB_LEASE_TOKEN]",
              envvar="IBHUB_LEASE_TOKEN")
def lease(
    rpc: str | None, timeout: float, name: str, ttl: float, release_id: int | None,
    renew: bool, token: str | None,
) -> None:
    """Lease a free raw TWS client id (printed on stdout), or --release / --renew one.

    For scripts that must open their own Gateway connection: the id is never the
    hub's own and never one in use, and stays reserved until released or expired
    (raw ids live raw_lease_ttl, 24 h by default, unless renewed). The lease's secret
    token is printed on stderr: releasing or renewing takes it.
    """
    if release_id is not None:
        credential = "" if token else (read_operator_token() or "")
        _request_or_exit(rpc, ReleaseClientId(id=0, client_id=release_id, token=token or "",
                                              credential=credential), timeout)
        click.echo(f"released client id {release_id}", err=True)
        return
    if renew and not token:
        raise click.UsageError("--renew needs the raw id's --token")
    reply = _request_or_exit(
        rpc, LeaseClientId(id=0, name=name, ttl=ttl, token=token if renew and token else ""),
        timeout)
    if not isinstance(reply, ClientIdLeased):
        raise click.ClickException(f"unexpected reply {type(reply).__name__} to a lease request")
    click.echo(str(reply.client_id))
    note = f" for {reply.expires_in:.0f} s" if reply.expires_in else " until released"
    what = "renewed" if renew else f"leased to {name!r}"
    click.echo(f"client id {reply.client_id} {what}{note}; token {reply.token} "
               f"(renew: ibhub lease --renew --token TOKEN; release: ibhub lease --release "
               f"{reply.client_id} --token TOKEN)", err=True)


# ---------------------------------------------------------------------------- names


def format_names(names: Sequence[NameInfo]) -> str:
    """Bound script names, one a line: name, bound at, last seen, live leases, key."""
    if not names:
        return "no script names are bound"
    width = max(12, *(len(n.name) for n in names))
    lines = [f"{'name':<{width}}  {'bound':<23}  {'last seen':<23}  live  key"]
    for n in names:
        lines.append(f"{n.name:<{width}}  {_when(n.bound_at):<23}  {_when(n.last_seen):<23}"
                     f"  {n.live:>4}  {n.key or '-'}")
    return "\n".join(lines)


async def _names(pub: str | None, rpc: str | None, forget: str | None,
                 timeout: float) -> list[NameInfo]:
    # This tool's own name is of this process only, its secret in memory.
    hub = AsyncHub(pub=pub, rpc=rpc, name=run_name("ibhub-names"),
                   name_secret=new_secret(), role="operator", connect_timeout=timeout,
                   connect_retries=1, request_timeout=timeout)
    async with hub:
        if forget is not None:
            await hub.forget_name(forget)
        return await hub.names()


@click.command()
@pub_option
@rpc_option
@timeout_option
@click.option("--forget", default=None, metavar="NAME",
              help="drop NAME's binding: the next script to say hello with it claims it")
@click.option("--json", "as_json", is_flag=True, help="print the bound names as JSON")
def names(pub: str | None, rpc: str | None, timeout: float, forget: str | None,
          as_json: bool) -> None:
    """List the bound script names (operator), or --forget one.

    A script name is bound to the first secret (or CURVE key) that says hello with it;
    later hellos with the name need it (docs/security.md, "Script names"). Forget a
    binding when its secret is lost, or to let another script take the name. Needs the
    operator role: the hub's operator token file readable by you, or a CURVE key in
    curve_operator_keys.
    """
    try:
        bound = asyncio.run(_names(pub, rpc, forget, timeout))
    except (HubError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    if forget is not None:
        click.echo(f"forgot script name {forget!r}", err=True)
    if as_json:
        click.echo(json.dumps([msgspec.to_builtins(n) for n in bound], indent=2))
    else:
        click.echo(format_names(bound))


# ---------------------------------------------------------------------------- tail


def _num(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def format_event(topic: str, event: Event) -> str:
    """One event as one readable line: time, topic, seq, then what it says."""
    stamp = dt.datetime.fromtimestamp(event.ts / 1e9, dt.UTC).strftime("%H:%M:%S.%f")
    head = f"{stamp} {topic} #{event.seq}"
    match event:
        case Tick():
            return (
                f"{head} {event.symbol} bid {_num(event.bid)} x {_num(event.bid_size)}"
                f"  ask {_num(event.ask)} x {_num(event.ask_size)}"
                f"  last {_num(event.last)} x {_num(event.last_size)}  vol {_num(event.volume)}"
            )
        case Bar():
            return (
                f"{head} {event.symbol} bar {event.time} o {_num(event.open)} h {_num(event.high)}"
                f" l {_num(event.low)} c {_num(event.close)} v {_num(event.volume)}"
            )
        case HubStatus():
            code = f" {event.code}" if event.code else ""
            return f"{head} {event.state} {event.kind}{code}: {event.message}"
        case ErrorEvent():
            return f"{head} IB error {event.ib_code}: {event.message}"
    fields = msgspec.to_builtins(event)
    return f"{head} {type(event).__name__} {fields}"


def _event_json(topic: str, event: Event) -> str:
    body: dict[str, Any] = {"topic": topic, "type": type(event).__struct_config__.tag}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        body[name] = None if isinstance(value, float) and math.isnan(value) else value
    return json.dumps(body)


async def _tail(
    pub: str, rpc: str | None, topics: Sequence[str], symbols: Sequence[str],
    count: int, as_json: bool, duration: float,
) -> int:
    """Print events until ``count`` were shown or ``duration`` seconds passed (0: no
    limit); returns how many were shown."""
    shown = [0]
    try:
        async with asyncio.timeout(duration if duration > 0 else None):
            await _tail_events(pub, rpc, topics, symbols, count, as_json, shown)
    except TimeoutError:
        pass
    return shown[0]


async def _tail_events(
    pub: str, rpc: str | None, topics: Sequence[str], symbols: Sequence[str],
    count: int, as_json: bool, shown: list[int],
) -> None:
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    hub: AsyncHub | None = None
    try:
        curve = client_curve()  # $IBHUB_SERVER_KEY / $IBHUB_CLIENT_KEY_FILE, else plain
        if curve is not None:
            curve.apply(sock)
        for topic in topics or [""]:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(pub)
        if symbols:
            # A name of this process only (docs/security.md, "Script names").
            hub = AsyncHub(pub=pub, rpc=rpc, name=run_name("ibhub-tail"),
                           name_secret=new_secret(), role="readonly")
            await hub.connect()
            for symbol in symbols:
                sub = await hub.subscribe(symbol, callback=lambda event: None)
                click.echo(f"subscribed {symbol} -> {sub.topic}", err=True)
        last_seq: dict[str, int] = {}
        bundles = any(t.startswith("bundle") for t in topics)  # asked for by name only
        while count <= 0 or shown[0] < count:
            frames = await sock.recv_multipart()
            if len(frames) != 2:
                click.echo(f"-- ignoring a {len(frames)}-frame message", err=True)
                continue
            try:
                topic = frames[0].decode()
                message = wire.decode_event(frames[1])
            except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                click.echo(f"-- undecodable event on {frames[0][:64]!r}: {exc}", err=True)
                continue
            if topic == TOPIC_BUNDLE and not bundles:
                continue  # the same ticks as the tick.* topics, again (docs/protocol.md)
            for name, event in wire.events_of(topic, message):
                previous = last_seq.get(name)
                if previous is not None and event.seq > previous + 1:
                    click.echo(f"-- gap on {name}: {event.seq - previous - 1} event(s) lost",
                               err=True)
                last_seq[name] = event.seq
                click.echo(_event_json(name, event) if as_json else format_event(name, event))
                shown[0] += 1
                if shown[0] == count:
                    break
    finally:
        if hub is not None:
            await hub.close()
        sock.close(linger=0)
        context.term()


@click.command()
@click.argument("topics", nargs=-1)
@pub_option
@rpc_option
@click.option("-s", "--subscribe", "symbols", multiple=True, metavar="SYMBOL",
              help="also subscribe SYMBOL through the hub while tailing (repeatable)")
@click.option("-n", "--count", default=0, type=int, help="exit after N events (0: run until ^C)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event")
@click.option("--timeout", "duration", default=0.0, type=float, metavar="SECONDS",
              help="stop after SECONDS; with --count, exit 1 if fewer events came (0: never)")
def tail(
    topics: tuple[str, ...], pub: str | None, rpc: str | None, symbols: tuple[str, ...],
    count: int, as_json: bool, duration: float,
) -> None:
    """Print live hub events readably. TOPIC is a prefix (tick.AAPL, tick., hub.status);
    none means every topic.

    The hub publishes a tick topic only while someone is subscribed to it; use
    --subscribe AAPL to hold that subscription for the duration of the tail.
    """
    endpoint = wire.pub_endpoint(pub)
    click.echo(f"tailing {', '.join(topics) or 'every topic'} on {endpoint}", err=True)
    try:
        shown = asyncio.run(_tail(endpoint, rpc, topics, symbols, count, as_json, duration))
    except (HubError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        with contextlib.suppress(BrokenPipeError):
            sys.stderr.write("\n")
        return
    if 0 < shown < count or (count > 0 and shown == 0):
        raise click.ClickException(f"only {shown} of {count} event(s) within {duration:g} s")


def _keeping_up(gaps: int, lag_ms: float) -> str:
    """What a lease's client reported about keeping up (a slow subscriber), if anything."""
    parts = ([f"{gaps} gap(s)"] if gaps else []) + ([f"lag {lag_ms / 1000:.1f} s"]
                                                    if lag_ms else [])
    return f"  fell behind: {', '.join(parts)}" if parts else ""
