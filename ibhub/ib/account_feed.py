"""The hub's account subscriptions on its IB library session, beyond what ``connect`` asks.

The library's connect subscribes positions (every account), account values of every
account (``reqAccountUpdatesMulti``) and, with one managed account, its portfolio
(``reqAccountUpdates``). This adds, once per session (``subscribe`` on every (re)connect):

* ``reqAccountSummary`` (group "All", every tag and ``$LEDGER:ALL``): IB's own summary,
  which the hub serves (``ibhub.orders.account_summary``) instead of deriving it;
* ``reqPnL`` of every managed account;
* ``reqPnLSingle`` of every position (account, conId), as positions appear: the figures
  scripts ask for, and the only portfolio valuation IB gives for accounts other than
  the one ``reqAccountUpdates`` follows (a Gateway allows one at a time).

Each is one upstream subscription however many scripts read it (the hub's shared
cache, :class:`ibhub.orders.account.AccountBook`). IB ends them with the session; the
library forgets its keys on reconnect, so ``subscribe`` asks again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from ibhub.orders.account import AccountBook, PnL

log = logging.getLogger(__name__)


def _f(x: Any) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) and abs(value) < 1e300 else math.nan


class IbAccountFeed:
    def __init__(self, ib: Any, book: AccountBook) -> None:
        self._ib = ib
        self._book = book
        self.accounts: tuple[str, ...] = ()
        ib.pnlEvent += self._on_pnl
        ib.pnlSingleEvent += self._on_pnl_single
        ib.positionEvent += self._on_position

    def close(self) -> None:
        ib = self._ib
        ib.pnlEvent -= self._on_pnl
        ib.pnlSingleEvent -= self._on_pnl_single
        ib.positionEvent -= self._on_position

    def subscribe(self, accounts: Sequence[str]) -> None:
        """After every (re)connect: summary, PnL per account, pnlSingle per position."""
        ib = self._ib
        if not ib.isConnected():
            return
        self.accounts = tuple(accounts)
        summary = ib.reqAccountSummaryAsync()  # stays subscribed after its end marker
        summary.add_done_callback(_quiet)
        for account in self.accounts:
            if (account, "") not in ib.wrapper.pnlKey2ReqId:
                ib.reqPnL(account)
        for p in ib.positions():
            self.want_single(p.account, p.contract.conId)
        log.info("account feed: summary, PnL of %s, %d position PnL(s)",
                 ", ".join(self.accounts) or "no accounts", len(ib.wrapper.pnlSingleKey2ReqId))

    def want_single(self, account: str, con_id: int) -> bool:
        """Subscribe reqPnLSingle of (account, con_id) unless it is; False when no session."""
        ib = self._ib
        if not ib.isConnected() or not con_id or not account:
            return False
        if (account, "", con_id) not in ib.wrapper.pnlSingleKey2ReqId:
            ib.reqPnLSingle(account, "", con_id)
        return True

    def _on_position(self, p: Any) -> None:
        if float(p.position) != 0:
            self.want_single(p.account, p.contract.conId)

    def _on_pnl(self, v: Any) -> None:
        self._book.on_pnl(PnL(v.account, 0, _f(v.dailyPnL), _f(v.unrealizedPnL),
                              _f(v.realizedPnL)))

    def _on_pnl_single(self, v: Any) -> None:
        self._book.on_pnl(PnL(v.account, int(v.conId), _f(v.dailyPnL), _f(v.unrealizedPnL),
                              _f(v.realizedPnL), _f(v.position), _f(v.value)))


def _quiet(fut: Any) -> None:
    """The summary request's future: its outcome (a lost session) needs no one."""
    if not fut.cancelled():
        fut.exception()
