"""ib_insync's per-session order caches, pruned once the order manager holds what they say.

ib_insync keeps every order of a Gateway session in ``ib.wrapper.trades`` (keyed by
(clientId, orderId), or by permId for orders placed elsewhere and for completed orders)
and ``ib.wrapper.permId2Trade``, every execution in ``ib.wrapper.fills`` (execId ->
Fill with its CommissionReport), and each ``Trade`` carries its fills and a log entry
per status change. Nothing leaves before the session ends (``wrapper.reset`` on
disconnect): ~13 KB per order, so a hub that trades for weeks grows without bound.

The hub reads none of it once an order is over: its book (:mod:`ibhub.orders.manager`) holds
the order and its fills, the journal records them, and reconciliation after a
reconnect asks the Gateway afresh (open orders, completed orders, executions; the
session's caches were reset anyway). So a finished trade leaves the caches, with its
fills, when (the *grace rule*):

* both ib_insync and the book say it ended (Filled, Cancelled, ApiCancelled, Inactive),
  and the book holds every execution IB reported for it (the executed shares reach the
  status's ``filled``), each with its commission report -- checked by a sweep every
  ``interval`` seconds (1) while ended trades are waiting;
* or ``grace`` seconds (60) after it was first seen ended, if the book says it ended,
  whatever is still missing: a commission report that never comes (IB sends none for
  some executions) must not pin the trade. Missing parts still reach the book, below.

A trade the book still calls working is never pruned (ib_insync marks an order
Cancelled on any error about it, even a refused modify; the order keeps working).
Executions whose trade is not cached (executions of orders the session never saw
placed, fetched at connect) follow the same rule by themselves.

Why wait for the commission rather than prune at the terminal status: IB sends
commissionReport after execDetails, often after the final orderStatus, sometimes
seconds later; while the fill is cached ib_insync routes the report as usual.

Nothing is lost by pruning early either: ib_insync silently drops what it cannot match
to a cached trade or fill (an execDetails without a trade emits no event, a
commissionReport without a fill is ignored, an orderStatus without a trade only logs
an error). :class:`TradeCache` wraps those three ``wrapper`` methods (instance
attributes; ib_insync's decoder looks them up per message): a message about an order
that is no longer cached but that the book knows goes straight to the book; every
other message goes to ib_insync exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from ibhub.ib.lib import ORDER_CACHES, check_internals

log = logging.getLogger(__name__)

ENDED: Final = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
# What the book says about an ended trade (BookView.trade_state):
WORKING: Final = "working"  # the book's order still works: never pruned
SETTLED: Final = "settled"  # ended, every execution and commission in the book: prune now
PENDING: Final = "pending"  # ended, parts missing: prune after the grace period
UNKNOWN: Final = "unknown"  # the book has no such order: prune after the grace period
GRACE: Final = 60.0  # seconds an ended trade may wait for its missing parts
INTERVAL: Final = 1.0  # seconds between sweeps while ended trades wait
_PATCHED: Final = ("execDetails", "commissionReport", "orderStatus")
_UNSET_DOUBLE: Final = 1.7976931348623157e308


class BookView(Protocol):
    """What the cache needs to know from (and hand to) the order manager."""

    def trade_state(self, trade: Any) -> str:
        """WORKING, SETTLED, PENDING or UNKNOWN (above) for an ended ib_insync trade."""
        ...

    def fill_settled(self, exec_id: str) -> bool:
        """The book holds this execution with its commission."""
        ...

    def knows_fill(self, exec_id: str) -> bool: ...

    def knows_order(self, order_id: int, client_id: int, perm_id: int) -> bool: ...

    def late_execution(self, contract: Any, execution: Any) -> None: ...

    def late_commission(self, report: Any) -> None: ...

    def late_status(self, order_id: int, client_id: int, perm_id: int, status: str,
                    filled: float, remaining: float, avg_fill_price: float,
                    last_fill_price: float, why_held: str) -> None: ...  # fmt: skip


class TradeCache:
    """Prunes ended trades (and their fills) from one ``IB``'s wrapper; see the module doc."""

    def __init__(
        self,
        ib: Any,
        book: BookView,
        *,
        grace: float = GRACE,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ib = ib
        self._book = book
        self.grace = grace
        self.interval = interval
        self._clock = clock
        self._ended: dict[int, tuple[Any, float]] = {}  # id(trade) -> (trade, first seen ended)
        self._loose: dict[str, float] = {}  # execId of a fill without a cached trade -> seen
        self._timer: asyncio.TimerHandle | None = None
        self._saved: dict[str, Any] = {}
        self.pruned_trades = 0
        self.pruned_fills = 0
        self.sweeps = 0
        self.late_routed = 0  # messages about pruned orders handed to the book directly

    # ------------------------------------------------------------------ lifecycle

    def install(self) -> None:
        """Watch ended trades and route late messages (call once, with the book attached).

        Raises :class:`~ibhub.ib.lib.LibraryMismatch` naming what moved if the installed
        library no longer keeps its caches where :data:`~ibhub.ib.lib.ORDER_CACHES` says.
        """
        check_internals(self._ib, (ORDER_CACHES,))
        ib, wrapper = self._ib, self._ib.wrapper
        ib.orderStatusEvent += self._on_trade
        ib.openOrderEvent += self._on_trade
        for name in _PATCHED:
            self._saved[name] = wrapper.__dict__.get(name)
        originals = {name: getattr(wrapper, name) for name in _PATCHED}
        wrapper.execDetails = self._exec_details(originals["execDetails"])
        wrapper.commissionReport = self._commission_report(originals["commissionReport"])
        wrapper.orderStatus = self._order_status(originals["orderStatus"])

    def uninstall(self) -> None:
        ib, wrapper = self._ib, self._ib.wrapper
        ib.orderStatusEvent -= self._on_trade
        ib.openOrderEvent -= self._on_trade
        for name, saved in self._saved.items():
            if saved is None:
                wrapper.__dict__.pop(name, None)
            else:
                setattr(wrapper, name, saved)
        self._saved.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sizes(self) -> dict[str, int]:
        """How much ib_insync holds now (for status and benchmarks)."""
        w = self._ib.wrapper
        return {
            "trades": len(w.trades),
            "perm_id_trades": len(w.permId2Trade),
            "fills": len(w.fills),
            "waiting": len(self._ended) + len(self._loose),
        }

    # ------------------------------------------------------------------ what ended

    def _on_trade(self, trade: Any) -> None:
        if trade.orderStatus.status in ENDED and id(trade) not in self._ended:
            self._ended[id(trade)] = (trade, self._clock())
            self._arm()

    def scan(self) -> None:
        """Consider every ended trade and every loose fill of the session (after a
        reconcile: the start-up sync and reqCompletedOrders fire no events)."""
        w = self._ib.wrapper
        for trade in list(w.trades.values()):
            self._on_trade(trade)
        now = self._clock()
        for exec_id, fill in list(w.fills.items()):
            if fill.execution.permId not in w.permId2Trade:
                self._loose.setdefault(exec_id, now)
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and (self._ended or self._loose):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self.sweep)

    def sweep(self) -> None:
        """Prune what the grace rule allows now; re-arm while anything waits."""
        self._timer = None
        self.sweeps += 1
        now, book = self._clock(), self._book
        for key, (trade, since) in list(self._ended.items()):
            if trade.orderStatus.status not in ENDED:  # IB reopened it (rare): watch again
                del self._ended[key]
                continue
            if not self._cached(trade):  # gone already (session reset, or re-placed)
                del self._ended[key]
                continue
            state = book.trade_state(trade)
            if state == SETTLED or (state != WORKING and now - since >= self.grace):
                del self._ended[key]
                self._drop_trade(trade)
        fills = self._ib.wrapper.fills
        for exec_id, since in list(self._loose.items()):
            if book.fill_settled(exec_id) or now - since >= self.grace:
                del self._loose[exec_id]
                if fills.pop(exec_id, None) is not None:
                    self.pruned_fills += 1
        self._arm()

    def _keys(self, trade: Any) -> tuple[Any, int]:
        o = trade.order
        return self._ib.wrapper.orderKey(o.clientId, o.orderId, o.permId), o.permId

    def _cached(self, trade: Any) -> bool:
        trades = self._ib.wrapper.trades
        return any(trades.get(k) is trade for k in self._keys(trade))

    def _drop_trade(self, trade: Any) -> None:
        w, o = self._ib.wrapper, trade.order
        found = False
        for key in self._keys(trade):
            if w.trades.get(key) is trade:
                del w.trades[key]
                found = True
        if w.permId2Trade.get(o.permId) is trade:
            del w.permId2Trade[o.permId]
            found = True
        for fill in trade.fills:
            if w.fills.pop(fill.execution.execId, None) is not None:
                self.pruned_fills += 1
        if found:
            _release(trade)
            self.pruned_trades += 1
            log.debug("pruned order %d (permId %d) from ib_insync's caches", o.orderId, o.permId)

    # ------------------------------------------------------------------ late messages

    def _exec_details(self, original: Callable[..., None]) -> Callable[..., None]:
        def exec_details(reqId: int, contract: Any, execution: Any) -> None:
            w, e = self._ib.wrapper, execution
            if (
                reqId not in w._futures  # live, not an answer to reqExecutions
                and e.execId not in w.fills
                and e.permId not in w.permId2Trade
                and w.trades.get(w.orderKey(e.clientId, e.orderId, e.permId)) is None
                and self._book.knows_order(e.orderId, e.clientId, e.permId)
            ):
                self.late_routed += 1
                self._book.late_execution(contract, execution)
                return
            original(reqId, contract, execution)

        return exec_details

    def _commission_report(self, original: Callable[..., None]) -> Callable[..., None]:
        def commission_report(report: Any) -> None:
            if report.execId not in self._ib.wrapper.fills and self._book.knows_fill(report.execId):
                if report.yield_ == _UNSET_DOUBLE:  # as ib_insync does for cached fills
                    report.yield_ = 0.0
                if report.realizedPNL == _UNSET_DOUBLE:
                    report.realizedPNL = 0.0
                self.late_routed += 1
                self._book.late_commission(report)
                return
            original(report)

        return commission_report

    def _order_status(self, original: Callable[..., None]) -> Callable[..., None]:
        def order_status(
            orderId: int, status: str, filled: float, remaining: float, avgFillPrice: float,
            permId: int, parentId: int, lastFillPrice: float, clientId: int, whyHeld: str,
            mktCapPrice: float = 0.0,
        ) -> None:  # fmt: skip
            w = self._ib.wrapper
            if w.trades.get(w.orderKey(clientId, orderId, permId)) is None and (
                self._book.knows_order(orderId, clientId, permId)
            ):
                self.late_routed += 1
                self._book.late_status(orderId, clientId, permId, status, filled, remaining,
                                       avgFillPrice, lastFillPrice, whyHeld)  # fmt: skip
                return
            original(orderId, status, filled, remaining, avgFillPrice, permId, parentId,
                     lastFillPrice, clientId, whyHeld, mktCapPrice)  # fmt: skip

        return order_status


def _release(trade: Any) -> None:
    """Clear what a pruned trade's events last emitted. ``Trade.statusEvent.emit(trade)``
    (and the fill and commission events, with the trade first) leaves the trade in its
    own event's ``_value``: each trade is a reference cycle that only the garbage
    collector frees, ~84 objects an order (the order, its status, log, fills and 23
    events; docs/performance.md, section 11.2). Cleared, reference counting frees them
    as the trade leaves the caches. An empty tuple is what ``Event.value()`` reads as
    "no value"; ``_value`` is checked at start (``ibhub.ib.lib.ORDER_CACHES``)."""
    for name in getattr(trade, "events", ()):
        getattr(trade, name)._value = ()
