"""``ibhub run``: start the hub (optionally with an embedded simulated Gateway).

Runs on uvloop where available. Prints the endpoints at once and the upstream
state when the first connect attempt settles; exits cleanly (leases dropped,
upstream disconnected, sockets closed) on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import click

from ibhub.cli.logs import configure_logging
from ibhub.config import ConfigError, HubSettings, load_settings
from ibhub.protocol import UpstreamState


def _parse_gateway(value: str | None) -> tuple[str | None, int | None]:
    if not value:
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint="--gateway")
    try:
        return host, int(port)
    except ValueError:
        raise click.BadParameter(f"port {port!r} is not a number", param_hint="--gateway") from None


async def _serve(settings: HubSettings) -> None:
    from ibhub.hub.server import HubServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # pragma: no cover - Windows
            loop.add_signal_handler(sig, stop.set)
    hub = HubServer(settings)
    await hub.start()
    try:
        s = hub.settings
        click.echo(f"ibhub {_version()} running")
        click.echo(f"  pub  {hub.pub_endpoint}")
        click.echo(f"  rpc  {hub.rpc_endpoint}")
        sec = hub.security
        if sec.enabled and sec.allow is not None and sec.public_key is not None:
            click.echo(f"  curve on: {len(sec.allow.keys())} client key(s) allowed, "
                       f"hub public key {sec.public_key.decode()}")
        if hub.sim is not None:
            click.echo(f"  simulated Gateway on 127.0.0.1:{hub.sim.port} (seed {s.sim_seed})")
            if hub.sim_control is not None:
                click.echo(f"  sim-fault control {hub.sim_control.url}")
            click.echo(f"  data {s.data_dir}")
        click.echo(f"  upstream {s.gateway_host}:{s.gateway_port} client id {s.client_id}")
        for service in hub.services:
            if getattr(service, "tws_port", None):
                click.echo(f"  tws  127.0.0.1:{service.tws_port} (TWS API front door)")
        if hub.nats is not None:
            click.echo(f"  nats {', '.join(hub.nats.urls)} as ibhub.{hub.nats.hub}.* "
                       "(docs/scale-out.md)")
        if hub.ops is not None and hub.ops.http_port:
            click.echo(f"  http http://127.0.0.1:{hub.ops.http_port}/ "
                       "(status page; /health, /metrics)")
        deadline = time.monotonic() + s.connect_timeout * 3 + 1
        up = hub.upstream
        while (
            up is not None
            and up.state in (UpstreamState.DISCONNECTED, UpstreamState.CONNECTING)
            and time.monotonic() < deadline
            and not stop.is_set()
        ):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await stop.wait()
        if up is not None:
            extra = ""
            if up.connected:
                extra = f" (server version {up.server_version}, accounts {','.join(up.accounts)})"
            click.echo(f"  state {up.state}{extra}")
        if hub.orders is not None:
            click.echo(f"  trading {hub.orders.status()['trading']}")
        else:
            click.echo("  trading off (orders = false: a data-only hub)")
        click.echo("Ctrl-C to stop", err=True)
        await stop.wait()
    finally:
        click.echo("stopping", err=True)
        await hub.stop()


def _version() -> str:
    from ibhub import __version__

    return __version__


@click.command("run")
@click.option("--gateway", metavar="HOST:PORT",
              help="Gateway/TWS API address (env IB_HOST/IB_PORT).")
@click.option("--client-id", type=int, default=None,
              help="The hub's own TWS client id (default 0).")
@click.option("--pub", default=None,
              help="PUB endpoint (default $IBHUB_PUB or tcp://127.0.0.1:5570).")
@click.option("--rpc", default=None,
              help="Request endpoint (default $IBHUB_RPC or tcp://127.0.0.1:5571).")
@click.option("--sim", is_flag=True, default=None,
              help="Start a simulated Gateway in-process and use it.")
@click.option("--sim-seed", type=int, default=None, help="Seed of the simulated market.")
@click.option("--sim-tick-rate", type=float, default=None, help="Simulated ticks/s per instrument.")
@click.option("--sim-control-port", type=int, default=None,
              help="The simulator's fault control for `ibhub sim-fault` on 127.0.0.1:PORT "
                   "(default 4010; -1 = none).")
@click.option("--sim-accounts", default=None,
              help="The simulator's managed accounts, comma-separated (default DU1234567).")
@click.option("--replay", "sim_replay", default=None, type=click.Path(file_okay=False),
              help="With --sim: the simulator streams this recording (ibhub record).")
@click.option("--replay-speed", default=None,
              help="With --replay: 1 (recorded spacing, default), 10, max.")
@click.option("--lines-max", type=int, default=None, help="Market-data line budget (default 100).")
@click.option("--tws-port", type=int, default=None,
              help="Also serve TWS API scripts on 127.0.0.1:PORT (docs/tws-front-door.md).")
@click.option("--live", "allow_live", is_flag=True, default=None,
              help="Allow orders on a live port/account (else refused; IBHUB_ALLOW_LIVE=1).")
@click.option("--read-only", is_flag=True, default=None,
              help="Refuse every order; market data and queries keep working.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where the order journal lives (default ~/.local/share/ibhub).")
@click.option("--config", "config_file", default=None, metavar="FILE",
              help="TOML config file (default $IBHUB_CONFIG, ./ibhub.toml, "
                   "~/.config/ibhub/ibhub.toml, /etc/ibhub/ibhub.toml).")
@click.option("--nats", "nats_urls", default=None, metavar="URL[,URL...]",
              help="Mirror every topic to NATS JetStream and serve requests there "
                   "(docs/scale-out.md; needs the nats extra).")
@click.option("--nats-hub", default=None, metavar="NAME",
              help="This hub's name in NATS subjects ibhub.NAME.* (default 'hub').")
@click.option("--http-port", default=None, metavar="PORT|off",
              help="Status page, /health and /metrics on 127.0.0.1:PORT "
                   "(default 8570; 0 or off = none).")
@click.option("--lane", default=None, metavar="unix|off|tcp://127.0.0.1:PORT",
              help="The local fast path for SDK requests and order events "
                   "(default unix: DATA_DIR/lane.sock; docs/protocol.md section 12).")
@click.option("--log-level", default=None,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level (default INFO).")
@click.option("--log-format", default=None, type=click.Choice(["text", "json"]),
              help="text (default) or json (one object per line, for log shippers).")
def run(
    gateway: str | None,
    client_id: int | None,
    pub: str | None,
    rpc: str | None,
    sim: bool | None,
    sim_seed: int | None,
    sim_tick_rate: float | None,
    sim_control_port: int | None,
    sim_accounts: str | None,
    sim_replay: str | None,
    replay_speed: str | None,
    lines_max: int | None,
    tws_port: int | None,
    allow_live: bool | None,
    read_only: bool | None,
    data_dir: str | None,
    config_file: str | None,
    http_port: str | None,
    lane: str | None,
    nats_urls: str | None,
    nats_hub: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run the hub: one upstream API connection shared over ZeroMQ."""
    host, port = _parse_gateway(gateway)
    speed = None
    if sim_replay is not None or replay_speed is not None:
        if not sim or sim_replay is None:
            raise click.UsageError("--replay needs --sim (and --replay-speed needs --replay)")
        from ibhub.sim.replay import parse_speed

        try:
            speed = parse_speed(replay_speed or "1")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        settings = load_settings(
            gateway_host=host,
            gateway_port=port,
            client_id=client_id,
            pub=pub,  # else $IBHUB_PUB (HubSettings reads it), else the default
            rpc=rpc,
            sim=sim,
            sim_seed=sim_seed,
            sim_tick_rate=sim_tick_rate,
            sim_control_port=sim_control_port,
            sim_accounts=sim_accounts,
            sim_replay=sim_replay,
            sim_replay_speed=speed,
            lines_max=lines_max,
            tws_port=tws_port,
            lane=lane,
            allow_live=allow_live,
            read_only=read_only,
            data_dir=data_dir,
            http_port=http_port,
            nats_urls=nats_urls,
            nats_hub=nats_hub,
            log_level=log_level,
            log_format=log_format,
            config=config_file,
            detect_port=True,  # no port from any source: probe 7497, 4002, 7496, 4001
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    from ibhub.hub.limits import raise_nofile

    raise_nofile()  # before anything opens a socket (docs/operations.md, "Connection limits")
    # uvloop for the hub's loop only (a loop factory, not the global policy), so the
    # embedded simulator's thread keeps a stdlib loop.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        factory = None
    else:
        factory = uvloop.new_event_loop
    from ibhub.ib.lib import LibraryMismatch  # the IB client library: the hub needs it now

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(settings))
    except (ConfigError, LibraryMismatch) as exc:
        raise click.ClickException(str(exc)) from None
