"""``ibhub record DIR``: record what the hub carries (docs/recording.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

import click


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


async def _record(root: Path, pub: str | None, rpc: str | None, name: str,
                  selection: object, roll_seconds: float, roll_mb: float,
                  hold: list[str]) -> None:
    from ibhub.client import AsyncHub
    from ibhub.record.recorder import Recorder, Selection

    assert isinstance(selection, Selection)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # pragma: no cover - Windows
            loop.add_signal_handler(sig, stop.set)
    # readonly: a recorder listens (and may hold subscriptions); it never trades.
    async with AsyncHub(pub, rpc, name=name, role="readonly") as hub:
        recorder = Recorder(root, hub, selection, roll_seconds=roll_seconds, roll_mb=roll_mb,
                            subscribe=hold)
        recovery = await recorder.start()
        click.echo(f"recording {', '.join(sorted(selection.kinds))} from {hub.pub_endpoint} "
                   f"to {root}")
        click.echo(f"  start: {recovery.describe()}")
        click.echo("Ctrl-C to stop (buffers are written as parts first)", err=True)
        try:
            await stop.wait()
        finally:
            await recorder.stop()
            s = recorder.final or recorder.status()
            click.echo(f"stopped: {s['rows_written']} rows in {s['parts_written']} parts, "
                       f"{s['gaps']} gap(s), {s['missed']} event(s) missed", err=True)


@click.command("record")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--pub", default=None, help="The hub's PUB endpoint (default $IBHUB_PUB).")
@click.option("--rpc", default=None, help="The hub's request endpoint (default $IBHUB_RPC).")
@click.option("--name", default="ibhub-record", show_default=True,
              help="The recorder's script name at the hub.")
@click.option("--kinds", default="ticks,bars,orders,status", show_default=True,
              help="What to record: ticks, bars, orders (with fills), status.")
@click.option("--symbols", default=None, help="Only these symbols (comma-separated).")
@click.option("--topics", default=None,
              help="Only topics matching these patterns (comma-separated, fnmatch: tick.A*).")
@click.option("--subscribe", "hold", default=None,
              help="Also subscribe these contracts, so the hub streams them (comma-separated).")
@click.option("--roll-seconds", type=float, default=300.0, show_default=True,
              help="Write a part at least this often.")
@click.option("--roll-mb", type=float, default=64.0, show_default=True,
              help="Write a part when a buffer holds about this much (uncompressed).")
@click.option("--stats", "stats", is_flag=True, help="Show what is on disk in DIRECTORY; exit.")
@click.option("--json", "as_json", is_flag=True, help="With --stats: JSON output.")
def record(directory: str, pub: str | None, rpc: str | None, name: str, kinds: str,
           symbols: str | None, topics: str | None, hold: str | None, roll_seconds: float,
           roll_mb: float, stats: bool, as_json: bool) -> None:
    """Record ticks, bars, order events, fills and hub.status to Parquet in DIRECTORY."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "ibhub record needs pyarrow: pip install 'ibhub[record]'") from None
    root = Path(directory)
    if stats:
        from ibhub.record.stats import disk_stats, format_stats

        if not root.is_dir():
            raise click.ClickException(f"{root} is not a directory")
        info = disk_stats(root)
        click.echo(json.dumps(info, indent=1) if as_json else format_stats(info))
        return
    from ibhub.record.recorder import RecorderBusy, Selection

    if roll_seconds <= 0 or roll_mb <= 0:
        raise click.UsageError("--roll-seconds and --roll-mb must be positive")
    try:
        selection = Selection(
            kinds=frozenset(_csv(kinds)),
            symbols=frozenset(_csv(symbols)) if symbols else None,
            topics=tuple(_csv(topics)) if topics else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from ibhub.cli.logs import configure_logging

    configure_logging("INFO", "text", sys.stderr)
    try:
        asyncio.run(_record(root, pub, rpc, name, selection, roll_seconds, roll_mb,
                            _csv(hold)))
    except RecorderBusy as exc:
        raise click.ClickException(str(exc)) from None
