"""``ibhub orders``: list the orders in the journal, with owner and latest state.

Reads the journal file directly (read-only, so it works while the hub runs, after it
was killed, or when it is not running at all); it never talks to the hub or IB.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ibhub.orders.journal import JOURNAL_FILE, Journal, OrderRecord, default_data_dir
from ibhub.orders.order_types import decode_params
from ibhub.orders.port import decode_algo_params
from ibhub.orders.store import TERMINAL


def _price(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:g}"


def _when(ns: int) -> str:
    if not ns:
        return ""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(rec: OrderRecord) -> list[str]:
    price = " / ".join(p for p in (_price(rec.limit_price), _price(rec.stop_price)) if p)
    return [
        str(rec.order_id),
        rec.owner,
        rec.client_order_id or "",
        rec.symbol,
        rec.action,
        f"{rec.quantity:g}",
        rec.order_type,
        price,
        rec.status,
        f"{rec.filled:g}",
        _price(rec.avg_fill_price) if rec.filled else "",
        _when(rec.updated_ns),
    ]


_HEADER = ["ORDER", "OWNER", "CLIENT_ID", "SYMBOL", "SIDE", "QTY", "TYPE", "PRICE", "STATUS",
           "FILLED", "AVG", "UPDATED (UTC)"]  # fmt: skip


def _history(journal: Journal, order_id: int, as_json: bool) -> None:
    entries = journal.history(order_id)
    if not entries:
        raise click.ClickException(f"the journal has nothing about order {order_id}")
    if as_json:
        out = [{"ts_ns": ts, "kind": kind, "data": data} for ts, kind, data in entries]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for ts, kind, data in entries:
        detail = " ".join(f"{k}={v}" for k, v in data.items() if v not in (None, ""))
        click.echo(f"{_when(ts)}  {kind:<16} {detail}")


@click.command("orders")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per order, as a list.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The hub's data directory (default: $IBHUB_DATA_DIR or ~/.local/share/ibhub).",
)
@click.option("--owner", default=None, help="Only orders of this script name (or 'external').")
@click.option("--working", is_flag=True, help="Only orders that are still working.")
@click.option("--history", "history_of", type=int, default=None, metavar="ORDER_ID",
              help="Show everything the journal recorded about one order.")  # fmt: skip
def orders(
    as_json: bool, data_dir: Path | None, owner: str | None, working: bool, history_of: int | None
) -> None:
    """List orders recorded in the hub's journal, with owner and state."""
    path = (data_dir or default_data_dir()) / JOURNAL_FILE
    try:
        journal = Journal(path, readonly=True)
    except FileNotFoundError:
        raise click.ClickException(
            f"no order journal at {path}; has a hub run with this data directory? "
            "(use --data-dir or IBHUB_DATA_DIR)"
        ) from None
    try:
        if history_of is not None:
            _history(journal, history_of, as_json)
            return
        recs = journal.orders()
    finally:
        journal.close()
    recs = [
        r
        for r in recs
        if (owner is None or r.owner == owner) and (not working or r.status not in TERMINAL)
    ]
    if as_json:
        out = [
            {
                "order_id": r.order_id,
                "owner": r.owner,
                "client_order_id": r.client_order_id,
                "con_id": r.con_id,
                "symbol": r.symbol,
                "action": r.action,
                "quantity": r.quantity,
                "order_type": r.order_type,
                "limit_price": r.limit_price,
                "stop_price": r.stop_price,
                "tif": r.tif,
                "account": r.account,
                "status": r.status,
                "filled": r.filled,
                "remaining": r.remaining,
                "avg_fill_price": r.avg_fill_price,
                "commission": r.commission,
                "perm_id": r.perm_id,
                "parent_id": r.parent_id,
                "message": r.message,
                "created_ns": r.created_ns,
                "updated_ns": r.updated_ns,
                "order_ref": r.order_ref,
                "oca_group": r.oca_group,
                "oca_type": r.oca_type,
                "algo_strategy": r.algo_strategy,
                "algo_params": decode_algo_params(r.algo_params),
                "algo_id": r.algo_id,
                "order_params": decode_params(r.order_params),  # trailing, offsets, GTD
            }
            for r in recs
        ]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not recs:
        click.echo(f"no orders in {path}")
        return
    rows = [_HEADER, *(_row(r) for r in recs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
