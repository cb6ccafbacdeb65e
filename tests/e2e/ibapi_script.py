"""An unmodified IB ``ibapi`` EClient/EWrapper script, run in a subprocess by
tests/e2e/test_frontdoor_ibapi.py against the hub's front door.

``python ibapi_script.py PORT CLIENT_ID`` connects, takes AAPL market data, places a
resting limit order and cancels it, asks for news providers and family codes (id-less
requests) and soft-dollar tiers, sends a request the front door refuses
(reqWshMetaData: its error must end it), asks for positions, and prints one JSON
object with what it saw. Each step waits at most STEP seconds; a step that does not
finish is reported as ``failed``.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any

from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel
from ibapi.wrapper import EWrapper

STEP = 10.0


class App(EWrapper, EClient):
    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, self)
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def nextValidId(self, orderId: int) -> None:
        self.events.put(("nextValidId", orderId))

    def managedAccounts(self, accountsList: str) -> None:
        self.events.put(("managedAccounts", accountsList))

    def error(self, reqId: int, errorTime: int, errorCode: int, errorString: str,
              advancedOrderRejectJson: str = "") -> None:
        self.events.put(("error", reqId, errorCode, errorString))

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: Any) -> None:
        self.events.put(("tickPrice", reqId, tickType, price))

    def tickString(self, reqId: int, tickType: int, value: str) -> None:
        self.events.put(("tickString", reqId, tickType, value))

    def openOrder(self, orderId: int, contract: Any, order: Any, orderState: Any) -> None:
        self.events.put(("openOrder", orderId, orderState.status))

    def orderStatus(self, orderId: int, status: str, *rest: Any) -> None:
        self.events.put(("orderStatus", orderId, status))

    def newsProviders(self, newsProviders: Any) -> None:
        self.events.put(("newsProviders", [p.code for p in newsProviders]))

    def familyCodes(self, familyCodes: Any) -> None:
        self.events.put(("familyCodes", [f.accountID for f in familyCodes]))

    def softDollarTiers(self, reqId: int, tiers: Any) -> None:
        self.events.put(("softDollarTiers", reqId, len(tiers)))

    def positionEnd(self) -> None:
        self.events.put(("positionEnd",))

    def connectionClosed(self) -> None:
        self.events.put(("connectionClosed",))


def main() -> int:
    port, client_id = int(sys.argv[1]), int(sys.argv[2])
    app = App()
    seen: dict[str, Any] = {"errors": []}

    def wait(pred: Any, what: str) -> tuple[Any, ...]:
        deadline = time.monotonic() + STEP
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(what)
            try:
                ev = app.events.get(timeout=left)
            except queue.Empty:
                raise TimeoutError(what) from None
            if ev[0] == "error":
                seen["errors"].append(list(ev[1:]))
            if pred(ev):
                return ev

    app.connect("127.0.0.1", port, client_id)
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    step = "connect"
    try:
        next_id = wait(lambda e: e[0] == "nextValidId", step)[1]
        seen["server_version"] = app.serverVersion()
        aapl = Contract()
        aapl.symbol, aapl.secType, aapl.exchange, aapl.currency = "AAPL", "STK", "SMART", "USD"
        step = "market data"
        app.reqMktData(1001, aapl, "", False, False, [])
        bid = wait(lambda e: e[0] == "tickPrice" and e[1] == 1001 and e[2] == 1 and e[3] > 0,
                   step)[3]
        seen["bid"] = bid
        stamp = wait(lambda e: e[0] == "tickString" and e[1] == 1001 and e[2] == 45, step)
        seen["last_timestamp"] = int(stamp[3])
        app.cancelMktData(1001)
        step = "order"
        order = Order()
        order.action, order.orderType, order.totalQuantity = "BUY", "LMT", 2
        order.lmtPrice = round(bid * 0.97, 2)
        order.eTradeOnly = False
        order.firmQuoteOnly = False
        app.placeOrder(next_id, aapl, order)
        seen["order_status"] = wait(
            lambda e: e[0] == "orderStatus" and e[1] == next_id
            and e[2] in ("Submitted", "PreSubmitted"), step)[2]
        step = "cancel"
        app.cancelOrder(next_id, OrderCancel())
        seen["cancelled"] = wait(lambda e: e[0] == "orderStatus" and e[1] == next_id
                                 and e[2] == "Cancelled", step)[2]
        step = "news providers"
        app.reqNewsProviders()
        seen["news_providers"] = wait(lambda e: e[0] == "newsProviders", step)[1]
        step = "family codes"
        app.reqFamilyCodes()
        seen["family_accounts"] = wait(lambda e: e[0] == "familyCodes", step)[1]
        step = "soft dollar tiers"
        app.reqSoftDollarTiers(3001)
        seen["soft_dollar_tiers"] = wait(lambda e: e[0] == "softDollarTiers" and e[1] == 3001,
                                         step)[2]
        step = "refused request"
        started = time.monotonic()
        app.reqWshMetaData(2001)
        refused = wait(lambda e: e[0] == "error" and e[1] == 2001, step)
        seen["refused"] = [refused[2], refused[3], round(time.monotonic() - started, 3)]
        step = "positions"
        app.reqPositions()
        wait(lambda e: e[0] == "positionEnd", step)
        seen["positions_end"] = True
    except TimeoutError as exc:
        seen["failed"] = str(exc)
    finally:
        app.disconnect()
        thread.join(5)
    print(json.dumps(seen))
    return 1 if "failed" in seen else 0


if __name__ == "__main__":
    sys.exit(main())
