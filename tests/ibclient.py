"""The installed IB client library (ib_insync or ib_async, see :mod:`ibhub.ib.lib`) for tests.

Tests that act as a Gateway *client* (of the simulator or the hub's front door) import
the library's names from here, so they run with whichever library this Python has;
both speak the same API.
"""

from __future__ import annotations

from ibhub.ib import lib as iblib

lib = iblib.module
NAME = iblib.NAME
#: Error codes this library treats as warnings (a pending request is not ended) where
#: ib_insync, and so the hub (ibhub.tws.ib_codes.is_warning), treats them as errors.
CLIENT_ONLY_WARNINGS: frozenset[int] = frozenset({105, 321, 329} if NAME == "ib_async" else ())

IB = lib.IB
Bag = lib.Bag
ComboLeg = lib.ComboLeg
CommissionReport = lib.CommissionReport
ContFuture = lib.ContFuture
Contract = lib.Contract
Execution = lib.Execution
Forex = lib.Forex
Future = lib.Future
LimitOrder = lib.LimitOrder
MarketOrder = lib.MarketOrder
Option = lib.Option
Order = lib.Order
OrderState = lib.OrderState
PriceCondition = lib.PriceCondition
ScannerSubscription = lib.ScannerSubscription
Stock = lib.Stock
StopLimitOrder = lib.StopLimitOrder
StopOrder = lib.StopOrder
TagValue = lib.TagValue
TimeCondition = lib.TimeCondition

Client = iblib.submodule("client").Client
Decoder = iblib.submodule("decoder").Decoder
DeltaNeutralContract = iblib.submodule("contract").DeltaNeutralContract
wrapper = iblib.submodule("wrapper")
