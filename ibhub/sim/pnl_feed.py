"""PnL subscriptions of the simulated Gateway: reqPnL (92/93) and reqPnLSingle (94/95).

``pnl`` (94): ``reqId, dailyPnL, unrealizedPnL, realizedPnL`` of one account;
``pnlSingle`` (95): ``reqId, pos, dailyPnL, unrealizedPnL, realizedPnL, value`` of one
position. Both follow fills at once and prices at most every ``interval`` seconds (IB:
about once a second), and only when a figure changed.

Decision: the simulated trading day starts with the simulator (accounts start flat),
so ``dailyPnL`` is the realized plus the unrealized P&L since then.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ibhub.sim.broker import Broker, SessionLike

HANDLED = frozenset({92, 93, 94, 95})


@dataclass
class _Sub:
    session: SessionLike
    req_id: int
    account: str
    con_id: int = 0  # 0: the whole account (reqPnL)
    last: tuple[float, ...] = field(default=())
    sent_at: float = -math.inf


class PnLFeed:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._subs: dict[tuple[int, int], _Sub] = {}  # (id(session), reqId) -> subscription
        self.interval = 1.0  # seconds between price-driven updates of one subscription

    # ---- requests ---------------------------------------------------------------------------

    def _account(self, session: SessionLike, req_id: int, account: str) -> str | None:
        if account not in self._broker.accounts:
            session.send_error(req_id, 321, f"Error validating request.-'cu' : cause - "
                                            f"Invalid account code {account!r}")
            return None
        return account

    def req_pnl(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[92, reqId, account, modelCode]"""
        req_id = int(fields[1])
        account = self._account(session, req_id, fields[2] if len(fields) > 2 else "")
        if account is not None:
            self._start(_Sub(session, req_id, account))

    def req_pnl_single(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[94, reqId, account, modelCode, conId]"""
        req_id = int(fields[1])
        account = self._account(session, req_id, fields[2] if len(fields) > 2 else "")
        if account is None:
            return
        con_id = int(fields[4]) if len(fields) > 4 and fields[4] else 0
        if self._broker.universe.by_con_id(con_id) is None:
            session.send_error(req_id, 200, "No security definition has been found for the "
                                            "request")
            return
        self._start(_Sub(session, req_id, account, con_id))

    def cancel(self, session: SessionLike, fields: Sequence[str]) -> None:
        sub = self._subs.pop((id(session), int(fields[1])), None)
        if sub is not None and sub.con_id:
            self._broker.market_release(sub.con_id)

    def _start(self, sub: _Sub) -> None:
        self._subs[(id(sub.session), sub.req_id)] = sub
        if sub.con_id:
            self._broker.market_acquire(sub.con_id)
        self._send(sub, force=True)

    # ---- figures --------------------------------------------------------------------------

    def figures(self, account: str, con_id: int = 0) -> tuple[float, ...]:
        """(daily, unrealized, realized) of an account, or (pos, daily, unrealized,
        realized, value) of one position."""
        book = self._broker.accounts[account]
        price_of = self._broker.price_of
        if not con_id:
            unrealized = sum(book.valuation(h, price_of(cid)).unrealized_pnl
                             for cid, h in book.holdings.items() if h.qty)
            return (round(book.realized_pnl + unrealized, 2), round(unrealized, 2),
                    round(book.realized_pnl, 2))
        h = book.holdings.get(con_id)
        if h is None:
            return (0.0, 0.0, 0.0, 0.0, 0.0)
        v = book.valuation(h, price_of(con_id))
        unrealized = v.unrealized_pnl if h.qty else 0.0
        return (h.qty, round(h.realized_pnl + unrealized, 2), round(unrealized, 2),
                round(h.realized_pnl, 2), round(v.market_value if h.qty else 0.0, 2))

    def _send(self, sub: _Sub, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - sub.sent_at < self.interval:
            return
        figures = self.figures(sub.account, sub.con_id)
        if not force and figures == sub.last:
            return
        sub.last, sub.sent_at = figures, now
        sub.session.send(95 if sub.con_id else 94, sub.req_id, *figures)

    # ---- pushes ---------------------------------------------------------------------------

    def account_changed(self, account: str) -> None:
        """A fill: every subscription of the account at once."""
        for sub in list(self._subs.values()):
            if sub.account == account:
                self._send(sub, force=sub.last != self.figures(sub.account, sub.con_id))

    def on_quote(self, con_id: int) -> None:
        for sub in list(self._subs.values()):
            if sub.con_id == con_id or (not sub.con_id and con_id in
                                        self._broker.accounts[sub.account].holdings):
                self._send(sub)

    def drop_session(self, session: SessionLike) -> None:
        for key in [k for k in self._subs if k[0] == id(session)]:
            sub = self._subs.pop(key)
            if sub.con_id:
                self._broker.market_release(sub.con_id)
