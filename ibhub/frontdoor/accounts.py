"""Positions, portfolio, account values and summary from the hub's central cache.

IB allows one account subscription per connection; the hub holds it (the order
service's :class:`~ibhub.orders.account.AccountBook`) and every downstream script is
answered from that cache, so forty scripts asking for positions at connect cost
the Gateway nothing. ``reqPositions`` and ``reqAccountUpdates`` also stream: the
hub's ``position.*`` / ``account.*`` events become position (61), updatePortfolio
(7) and updateAccountValue (6) messages for the connections that asked. Without
an order service (trading not wired) the cache is empty and every request still
gets its end marker.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from ibhub.frontdoor.contracts import inst_for
from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.protocol import AccountValueEvent, PositionEvent
from ibhub.sim import broker_messages as msgs

if TYPE_CHECKING:
    from ibhub.frontdoor.server import FrontDoor


def handlers(door: FrontDoor) -> dict[int, Handler]:
    def cache() -> Any:
        service = door.order_service()
        return None if service is None else service.account

    def inst(con_id: int, symbol: str, sec_type: str, currency: str) -> Any:
        return inst_for(door.contracts, con_id, symbol, sec_type, currency)

    def req_positions(s: DownstreamSession, f: list[str]) -> None:
        book = cache()
        for p in book.positions() if book is not None else ():
            s.send_fields(msgs.position(p.account, inst(p.con_id, p.symbol, p.sec_type,
                                                        p.currency), p.position, p.avg_cost))
        s.send_fields(msgs.position_end())
        s.positions_live = True

    def cancel_positions(s: DownstreamSession, f: list[str]) -> None:
        s.positions_live = False

    def req_positions_multi(s: DownstreamSession, f: list[str]) -> None:
        rid, account, model = int(f[2]), f[3], f[4] if len(f) > 4 else ""
        book = cache()
        for p in book.positions(account) if book is not None else ():
            c = msgs.contract11(inst(p.con_id, p.symbol, p.sec_type, p.currency))
            s.send(71, 1, rid, p.account, *c, p.position, p.avg_cost, model)
        s.send(72, 1, rid)

    def req_account_updates(s: DownstreamSession, f: list[str]) -> None:
        subscribe, account = f[2] == "1", f[3] if len(f) > 3 else ""
        if not subscribe:
            s.account_live = ""
            return
        account = account or door.account
        book = cache()
        if book is not None:
            for v in book.values(account):
                s.send_fields(msgs.account_value(v.key, v.value, v.currency, v.account))
            for item in book.portfolio(account):
                s.send_fields(_portfolio(item, inst(item.con_id, item.symbol, item.sec_type,
                                                    item.currency)))
        s.send_fields(msgs.account_time(dt.datetime.now(dt.UTC)))
        s.send_fields(msgs.account_download_end(account))
        s.account_live = account

    def quiet(s: DownstreamSession, f: list[str]) -> None:
        """Cancels of snapshot-style requests: nothing streams, nothing to stop."""

    return {
        61: req_positions,
        64: cancel_positions,
        74: req_positions_multi,
        75: quiet,  # cancelPositionsMulti
        6: req_account_updates,
        # 76 / 77 (account updates multi): frontdoor/account_streams.py, kept updating
        # 62 / 63 (account summary): frontdoor/account_streams.py, kept updating
    }


def on_event(door: FrontDoor, ev: Any) -> None:
    """A change in the hub's account cache, to the connections that follow it."""
    if isinstance(ev, AccountValueEvent):
        fields = msgs.account_value(ev.key, ev.value, ev.currency, ev.account)
        for s in door.clients.values():
            if s.account_live == ev.account:
                s.send_fields(fields)
    elif isinstance(ev, PositionEvent):
        i = inst_for(door.contracts, ev.con_id, ev.symbol, ev.sec_type, ev.currency)
        pos = msgs.position(ev.account, i, ev.position, ev.avg_cost)
        port = _portfolio(ev, i) if math.isfinite(ev.market_price) else None
        for s in door.clients.values():
            if s.positions_live:
                s.send_fields(pos)
            if port is not None and s.account_live == ev.account:
                s.send_fields(port)


def _num(x: float) -> float:
    """updatePortfolio fields are parsed with float(): unknown (NaN) goes out as 0."""
    return x if math.isfinite(x) else 0.0


def _portfolio(item: Any, i: Any) -> list[object]:
    return msgs.portfolio(item.account, i, item.position, _num(item.market_price),
                          _num(item.market_value), _num(item.avg_cost),
                          _num(item.unrealized_pnl), _num(item.realized_pnl))
