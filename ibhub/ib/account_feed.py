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
from collections.abc import Callable, Sequence
from typing import Any

from ibhub.orders.account import AccountBook, PnL

log = logging.getLogger(__name__)


def _f(x: Any) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) and abs(value) < 1e300 else math.nan


#: pace(send, label): send one upstream message when the hub's budget allows
PaceFn = Callable[[Callable[[], Any], str], Any]


def _now(send: Callable[[], Any], label: str) -> None:
    send()


class IbAccountFeed:
    def __init__(self, ib: Any, book: AccountBook) -> None:
        self._ib = ib
        self._book = book
        self.accounts: tuple[str, ...] = ()
        self.pace: PaceFn = _now  # the order service's pacer once it subscribes
        self._asked: set[tuple[str, int]] = set()  # (account, con_id or 0) this session
        ib.pnlEvent += self._on_pnl
        ib.pnlSingleEvent += self._on_pnl_single
        ib.positionEvent += self._on_position

    def close(self) -> None:
        ib = self._ib
        ib.pnlEvent -= self._on_pnl
        ib.pnlSingleEvent -= self._on_pnl_single
        ib.positionEvent -= self._on_position

    def subscribe(self, accounts: Sequence[str], pace: PaceFn | None = None) -> None:
        """After every (re)connect: summary, PnL per account, pnlSingle per position,
        each sent through ``pace`` (the hub's upstream budget)."""
        ib = self._ib
        if pace is not None:
            self.pace = pace
        if not ib.isConnected():
            return
        self.accounts = tuple(accounts)
        self._asked = set()
        self.pace(lambda: ib.reqAccountSummaryAsync().add_done_callback(_quiet),
                  "reqAccountSummary")
        for account in self.accounts:
            self._want(account, 0)
        for p in ib.positions():
            self.want_single(p.account, p.contract.conId)
        log.info("account feed: summary, PnL of %s, %d position PnL(s)",
                 ", ".join(self.accounts) or "no accounts", len(self._asked) - len(accounts))

    def want_single(self, account: str, con_id: int) -> bool:
        """Subscribe reqPnLSingle of (account, con_id) unless it is; False when no session."""
        if not con_id:
            return False
        return self._want(account, con_id)

    def _want(self, account: str, con_id: int) -> bool:
        ib = self._ib
        if not ib.isConnected() or not account:
            return False
        if (account, con_id) in self._asked:
            return True
        self._asked.add((account, con_id))

        def send() -> None:
            if not ib.isConnected():
                return  # the session ended meanwhile: the next one asks again
            if con_id and (account, "", con_id) not in ib.wrapper.pnlSingleKey2ReqId:
                ib.reqPnLSingle(account, "", con_id)
            elif not con_id and (account, "") not in ib.wrapper.pnlKey2ReqId:
                ib.reqPnL(account)
        what = f"reqPnLSingle {account} {con_id}" if con_id else f"reqPnL {account}"
        self.pace(send, what)
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
