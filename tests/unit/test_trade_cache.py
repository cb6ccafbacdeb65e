"""The grace rule of ibhub.ib.trade_cache on a real (unconnected) ib_insync wrapper.

Messages go through the wrapper's own methods (openOrder, orderStatus, execDetails,
commissionReport) as the decoder would call them; the book is a small fake that says
which orders and fills it holds; time is a manual clock and sweeps are called directly.
End to end with the simulator: tests/e2e/test_orders_ib_cache.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ibhub.ib.trade_cache import PENDING, SETTLED, UNKNOWN, WORKING, TradeCache
from tests.ibclient import IB, CommissionReport, Contract, Execution, Order, OrderState

CLIENT = 1
PERM = 9000


@dataclass
class FakeBook:
    states: dict[int, str] = field(default_factory=dict)  # permId -> trade_state answer
    fills: dict[str, bool] = field(default_factory=dict)  # execId -> has its commission
    late: list[tuple[str, Any]] = field(default_factory=list)

    def trade_state(self, trade: Any) -> str:
        return self.states.get(trade.order.permId, UNKNOWN)

    def fill_settled(self, exec_id: str) -> bool:
        return self.fills.get(exec_id, False)

    def knows_fill(self, exec_id: str) -> bool:
        return exec_id in self.fills

    def knows_order(self, order_id: int, client_id: int, perm_id: int) -> bool:
        return perm_id in self.states

    def late_execution(self, contract: Any, execution: Any) -> None:
        self.late.append(("exec", execution.execId))

    def late_commission(self, report: Any) -> None:
        self.late.append(("commission", report.execId))

    def late_status(self, order_id: int, client_id: int, perm_id: int, status: str,
                    *rest: Any) -> None:  # fmt: skip
        self.late.append(("status", status))


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def setup(grace: float = 60.0) -> tuple[IB, FakeBook, Clock, TradeCache]:
    ib = IB()
    ib.wrapper.clientId = CLIENT
    book, clock = FakeBook(), Clock()
    cache = TradeCache(ib, book, grace=grace, interval=3600, clock=clock)
    cache.install()
    return ib, book, clock, cache


def filled_order(ib: IB, order_id: int, perm: int, *, commission: bool = True) -> str:
    w = ib.wrapper
    contract = Contract(conId=265598, symbol="AAPL", secType="STK", currency="USD")
    order = Order(orderId=order_id, clientId=CLIENT, permId=perm, action="BUY",
                  totalQuantity=5, orderType="MKT")  # fmt: skip
    w.openOrder(order_id, contract, order, OrderState(status="Submitted"))
    exec_id = f"e.{perm}"
    w.execDetails(-1, contract, Execution(execId=exec_id, orderId=order_id, clientId=CLIENT,
                                          permId=perm, shares=5, price=1.0, cumQty=5))  # fmt: skip
    w.orderStatus(order_id, "Filled", 5, 0, 1.0, perm, 0, 1.0, CLIENT, "")
    if commission:
        w.commissionReport(CommissionReport(execId=exec_id, commission=1.0, currency="USD"))
    return exec_id


async def test_settled_orders_go_at_the_next_sweep_others_after_the_grace_period() -> None:
    ib, book, clock, cache = setup()
    w = ib.wrapper
    e1 = filled_order(ib, 1, PERM + 1)
    e2 = filled_order(ib, 2, PERM + 2, commission=False)
    filled_order(ib, 3, PERM + 3)
    book.states = {PERM + 1: SETTLED, PERM + 2: PENDING, PERM + 3: WORKING}
    book.fills = {e1: True, e2: False}
    cache.sweep()
    assert {t.order.orderId for t in w.trades.values()} == {2, 3}
    assert set(w.permId2Trade) == {PERM + 2, PERM + 3} and e1 not in w.fills
    clock.t = 59.0
    cache.sweep()
    assert len(w.trades) == 2
    clock.t = 60.0
    cache.sweep()  # order 2 waited long enough; order 3 is working in the book: never
    assert {t.order.orderId for t in w.trades.values()} == {3}
    assert set(w.fills) == {"e.9003"}
    assert (cache.pruned_trades, cache.pruned_fills) == (2, 2)
    cache.uninstall()


async def test_late_reports_for_a_pruned_order_go_to_the_book() -> None:
    ib, book, _clock, cache = setup(grace=0.0)
    w = ib.wrapper
    exec_id = filled_order(ib, 1, PERM, commission=False)
    book.states, book.fills = {PERM: PENDING}, {exec_id: False}
    cache.sweep()
    assert not w.trades and not w.fills and not w.permId2Trade
    w.commissionReport(CommissionReport(execId=exec_id, commission=1.0, currency="USD"))
    w.orderStatus(1, "Filled", 5, 0, 1.0, PERM, 0, 1.0, CLIENT, "")
    contract = Contract(conId=265598, symbol="AAPL")
    w.execDetails(-1, contract, Execution(execId="e.2", orderId=1, clientId=CLIENT,
                                          permId=PERM, shares=1, price=1.0))  # fmt: skip
    assert book.late == [("commission", exec_id), ("status", "Filled"), ("exec", "e.2")]
    assert not w.trades and not w.fills  # routed, not cached again
    # an order the book does not know still goes through ib_insync as before
    w.execDetails(-1, contract, Execution(execId="e.x", orderId=7, clientId=CLIENT,
                                          permId=PERM + 7, shares=1, price=1.0))  # fmt: skip
    assert "e.x" in w.fills and cache.late_routed == 3
    cache.uninstall()
    assert "execDetails" not in vars(w)  # ib_insync's own methods are back


async def test_a_pruned_trade_is_freed_at_once_not_left_to_the_collector() -> None:
    """A trade's events keep what they last emitted, the trade itself: a reference cycle
    only the garbage collector frees. Pruned, the trade and its parts go by reference
    counting, with the collector off."""
    import gc
    import weakref

    ib, book, _, cache = setup()
    filled_order(ib, 1, PERM + 1)
    trade = ib.wrapper.trades[ib.wrapper.orderKey(CLIENT, 1, PERM + 1)]
    assert trade.statusEvent.value() is trade  # the cycle
    gone = weakref.ref(trade)
    del trade
    filled_order(ib, 2, PERM + 2)  # the IB object's own events now name this one
    book.states = {PERM + 1: SETTLED, PERM + 2: WORKING}
    book.fills = {f"e.{PERM + 1}": True}
    gc.disable()
    try:
        cache.sweep()
        assert cache.pruned_trades == 1
        assert gone() is None
    finally:
        gc.enable()
        cache.uninstall()
