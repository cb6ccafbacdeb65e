"""``ibhub sim`` (run the simulated Gateway) and ``ibhub sim-fault`` (inject a fault)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from typing import Any

import click

from ibhub.sim.faults import KINDS

DEFAULT_CONTROL_PORT = 4010


def _accounts(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    accounts = tuple(a.strip() for a in value.split(",") if a.strip())
    if not accounts:
        raise click.BadParameter("give at least one account id, e.g. DU1234567")
    return accounts


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (keep it loopback).")
@click.option("--port", default=4002, show_default=True, type=int,
              help="TWS API port (4002 = paper Gateway; 0 = any free port).")
@click.option("--seed", default=1, show_default=True, type=int, help="Market random seed.")
@click.option("--tick-rate", default=4.0, show_default=True, type=float,
              help="Market events per second per streaming instrument.")
@click.option("--accounts", default="DU1234567", show_default=True, callback=_accounts,
              help="Comma-separated managed account ids.")
@click.option("--max-msg-rate", default=50.0, show_default=True, type=float,
              help="Messages/s per client before pacing error 100.")
@click.option("--control-port", default=DEFAULT_CONTROL_PORT, show_default=True, type=int,
              help="Loopback HTTP control port for `ibhub sim-fault` (-1 disables).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--replay", "replay_dir", default=None, type=click.Path(file_okay=False),
              help="Stream this recording's ticks (ibhub record) instead of random walks.")
@click.option("--speed", default="1", show_default=True,
              help="Replay speed: 1 (recorded spacing), 10 (ten times faster), max.")
@click.option("--from", "start", default=None, help="Replay from this UTC time (ISO 8601).")
@click.option("--to", "end", default=None, help="Replay up to this UTC time (ISO 8601).")
@click.option("--symbols", default=None, help="Replay only these symbols (comma-separated).")
def sim(host: str, port: int, seed: int, tick_rate: float, accounts: tuple[str, ...],
        max_msg_rate: float, control_port: int, log_level: str, replay_dir: str | None,
        speed: str, start: str | None, end: str | None, symbols: str | None) -> None:
    """Run a simulated IB Gateway that unmodified TWS API clients can connect to."""
    from ibhub.sim import SimConfig

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    replay = replay_spec(replay_dir, speed, start, end, symbols)
    try:
        cfg = SimConfig(host=host, port=port, seed=seed, tick_rate=tick_rate,
                        accounts=accounts, max_msg_rate=max_msg_rate, replay=replay)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        _run(_serve(cfg, control_port))
    except (ValueError, ImportError) as exc:  # a recording that cannot be replayed
        if replay is None:
            raise
        raise click.ClickException(f"--replay {replay_dir}: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc


def replay_spec(directory: str | None, speed: str, start: str | None, end: str | None,
                symbols: str | None) -> Any:
    """The ``--replay`` options as a ``ReplaySpec`` (None without ``--replay``)."""
    if directory is None:
        if start or end or symbols:
            raise click.UsageError("--from, --to and --symbols need --replay DIR")
        return None
    from ibhub.sim.replay import ReplaySpec, parse_speed, parse_time

    try:
        return ReplaySpec(
            directory, speed=parse_speed(speed), start_ns=parse_time(start),
            end_ns=parse_time(end),
            symbols=frozenset(s.strip() for s in symbols.split(",") if s.strip())
            if symbols else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (a few % more ticks/s), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


async def _serve(cfg: object, control_port: int) -> None:
    from ibhub.sim import SimGateway
    from ibhub.sim.control import ControlServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with SimGateway(cfg) as gw:  # type: ignore[arg-type]
        control = None
        if control_port >= 0:
            control = ControlServer(gw, "127.0.0.1", control_port)
            await control.start()
        click.echo(f"ibhub sim: simulated IB Gateway listening on {gw.config.host}:{gw.port} "
                   f"(server version {gw.config.server_version}, seed {gw.config.seed}, "
                   f"accounts {','.join(gw.config.accounts)})", err=False)
        if control is not None:
            click.echo(f"ibhub sim: fault control on {control.url} "
                       f"(e.g. ibhub sim-fault restart --seconds 5 --control {control.url})")
        try:
            await stop.wait()
        finally:
            if control is not None:
                await control.stop()
    click.echo("ibhub sim: stopped")


@click.command("sim-fault")
@click.argument("kind", type=click.Choice([*KINDS, "tick_rate", "status"]))
@click.option("--seconds", type=float, default=None,
              help="Duration (restart, farm_blip, freeze, connectivity_lost, hold_client_id).")
@click.option("--client-id", type=int, default=None, help="For hold_client_id.")
@click.option("--restored", type=click.Choice(["data_lost", "data_kept"]), default=None,
              help="For connectivity_lost: 1101 (data lost) or 1102 (data kept).")
@click.option("--hz", type=float, default=None, help="For tick_rate.")
@click.option("--control", default=f"http://127.0.0.1:{DEFAULT_CONTROL_PORT}",
              show_default=True, envvar="IBHUB_SIM_CONTROL",
              help="Control URL printed by `ibhub sim`.")
def sim_fault(kind: str, seconds: float | None, client_id: int | None, restored: str | None,
              hz: float | None, control: str) -> None:
    """Inject a fault into a running `ibhub sim` or `ibhub run --sim` (or read its status)."""
    params: dict[str, object] = {}
    if seconds is not None:
        params["seconds"] = seconds
    if client_id is not None:
        params["client_id"] = client_id
    if restored is not None:
        params["restored"] = restored
    if kind == "hold_client_id" and client_id is None:
        raise click.UsageError("hold_client_id needs --client-id")
    if kind == "tick_rate":
        if hz is None:
            raise click.UsageError("tick_rate needs --hz")
        params["hz"] = hz
    base = control.rstrip("/")
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    if kind == "status":
        req = urllib.request.Request(f"{base}/status", method="GET")
    elif kind == "tick_rate":
        req = urllib.request.Request(f"{base}/tick_rate{query}", method="POST", data=b"")
    else:
        req = urllib.request.Request(f"{base}/fault/{kind}{query}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{exc.code}: {exc.read().decode().strip()}") from exc
    except urllib.error.URLError as exc:
        raise click.ClickException(
            f"cannot reach the simulator control at {base} ({exc.reason}); is `ibhub sim` "
            "running with its control port?") from exc
    click.echo(json.dumps(body, indent=2 if kind == "status" else None))
