"""Risk gate: every refusal has its reason code; nothing else is refused."""

from __future__ import annotations

import math

import pytest

from ibhub.orders.risk import OrderParams, RiskGate, RiskLimits, Role, is_paper_account, live_reason
from ibhub.protocol import ContractSpec, ModifyOrder, PlaceOrder, RejectReason

AAPL = ContractSpec(symbol="AAPL")


def order(**kw: object) -> PlaceOrder:
    fields: dict[str, object] = {
        "id": 1,
        "lease": "L1",
        "client_order_id": "c1",
        "contract": AAPL,
        "action": "BUY",
        "quantity": 10.0,
        "order_type": "LMT",
        "limit_price": 100.0,
    }
    fields.update(kw)
    return PlaceOrder(**fields)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def gate(**limits: object) -> RiskGate:
    return RiskGate(RiskLimits(**limits), upstream_port=4002, accounts=["DU1234567"])  # type: ignore[arg-type]


def test_a_good_order_passes() -> None:
    g = gate()
    assert g.check_place(order(), lease="L1", role=Role.TRADER, last_price=101.0) is None
    assert (
        g.check_place(
            order(order_type="MKT", limit_price=None, client_order_id="m"),
            lease="L1",
            role=Role.TRADER,
        )
        is None
    )
    assert g.trading_blocked is None and g.live is None


@pytest.mark.parametrize(
    ("changes", "reason", "words"),
    [
        ({"quantity": 0.0}, RejectReason.BAD_QUANTITY, "quantity must be > 0"),
        ({"quantity": -5.0}, RejectReason.BAD_QUANTITY, "quantity"),
        ({"quantity": math.nan}, RejectReason.BAD_QUANTITY, "quantity"),
        ({"quantity": 20_000.0}, RejectReason.QUANTITY_LIMIT, "max_quantity"),
        ({"action": "buy"}, RejectReason.BAD_ACTION, "BUY or SELL"),
        ({"order_type": "PEG"}, RejectReason.BAD_ORDER_TYPE, "order_type"),
        ({"tif": "OPG"}, RejectReason.BAD_TIF, "tif"),
        ({"limit_price": None}, RejectReason.MISSING_LIMIT_PRICE, "limit_price"),
        ({"order_type": "STP", "limit_price": None}, RejectReason.MISSING_STOP_PRICE, "stop_price"),
        ({"order_type": "STP LMT", "stop_price": None}, RejectReason.MISSING_STOP_PRICE, "stop"),
        ({"limit_price": -1.0}, RejectReason.BAD_PRICE, "> 0"),
        ({"limit_price": math.inf}, RejectReason.BAD_PRICE, "finite"),
        ({"limit_price": 150.0}, RejectReason.PRICE_BAND, "away from the last price"),
        ({"order_type": "STP", "stop_price": 50.0}, RejectReason.PRICE_BAND, "stop_price"),
        ({"take_profit": 95.0, "stop_loss": 105.0}, RejectReason.BAD_PRICE, "take_profit above"),
        ({"client_order_id": ""}, RejectReason.BAD_CLIENT_ORDER_ID, "client_order_id"),
        ({"client_order_id": "x" * 65}, RejectReason.BAD_CLIENT_ORDER_ID, "1..64"),
        ({"client_order_id": "a\nb"}, RejectReason.BAD_CLIENT_ORDER_ID, "non-printable"),
        ({"account": "U999"}, RejectReason.LIVE_TRADING, "--live"),
    ],
)
def test_refusals(changes: dict[str, object], reason: str, words: str) -> None:
    refusal = gate().check_place(order(**changes), lease="L1", role=Role.TRADER, last_price=100.0)
    assert refusal is not None, changes
    assert refusal.reason == reason
    assert words in refusal.message


def test_static_checks_skip_the_band() -> None:
    g = gate()
    far = order(limit_price=500.0)
    assert g.check_static(far, role=Role.TRADER) is None
    refusal = g.check_band_and_rate(far, lease="L1", last_price=100.0)
    assert refusal is not None and refusal.reason == RejectReason.PRICE_BAND


def test_no_reference_price() -> None:
    assert gate().check_place(order(limit_price=500.0), lease="L", role=Role.TRADER) is None
    refusal = gate(require_reference_price=True).check_place(
        order(limit_price=500.0), lease="L", role=Role.TRADER
    )
    assert refusal is not None and refusal.reason == RejectReason.PRICE_BAND
    assert "no last price" in refusal.message
    assert (
        gate(price_band_pct=0).check_place(
            order(limit_price=500.0), lease="L", role=Role.TRADER, last_price=100.0
        )
        is None
    )


@pytest.mark.parametrize(("port", "accounts"), [(7496, ["DU1"]), (4001, ["DU1"]), (4002, ["U123"])])
def test_live_guard(port: int, accounts: list[str]) -> None:
    g = RiskGate(RiskLimits(), upstream_port=port, accounts=accounts)
    refusal = g.check_place(order(), lease="L", role=Role.TRADER, last_price=100.0)
    assert refusal is not None and refusal.reason == RejectReason.LIVE_TRADING
    assert g.trading_blocked is not None and "--live" in g.trading_blocked
    allowed = RiskGate(RiskLimits(allow_live=True), upstream_port=port, accounts=accounts)
    assert allowed.check_place(order(), lease="L", role=Role.TRADER, last_price=100.0) is None
    assert g.check_cancel(Role.TRADER) is None  # cancels only reduce risk


def test_paper_accounts() -> None:
    assert is_paper_account("DU1234567") and is_paper_account("DF99")
    assert not is_paper_account("U1234567")
    assert live_reason(4002, ["DU1", "DF2"]) is None
    assert live_reason(7497, ["DU1"]) is None


def test_read_only_hub_and_roles() -> None:
    ro = gate(read_only=True)
    refusal = ro.check_place(order(), lease="L", role=Role.TRADER, last_price=100.0)
    assert refusal is not None and refusal.reason == RejectReason.READ_ONLY_HUB
    assert ro.trading_blocked == "the hub runs read-only"
    assert ro.check_cancel(Role.TRADER) is None
    g = gate()
    refusal = g.check_place(order(), lease="L", role=Role.READONLY, last_price=100.0)
    assert refusal is not None and refusal.reason == RejectReason.READ_ONLY_LEASE
    cancel = g.check_cancel(Role.READONLY)
    assert cancel is not None and cancel.reason == RejectReason.READ_ONLY_LEASE
    op = g.check_operator(Role.TRADER, "a global cancel")
    assert op is not None and op.reason == RejectReason.FORBIDDEN
    assert g.check_operator(Role.OPERATOR, "a global cancel") is None
    assert g.check_place(order(), lease="L", role=Role.OPERATOR, last_price=100.0) is None


def test_rate_limit_per_lease() -> None:
    clock = FakeClock()
    g = RiskGate(
        RiskLimits(order_rate=2.0, order_burst=3), upstream_port=4002, accounts=["DU1"], clock=clock
    )
    ok = [g.check_place(order(), lease="A", role=Role.TRADER) for _ in range(3)]
    assert ok == [None, None, None]
    refusal = g.check_place(order(), lease="A", role=Role.TRADER)
    assert refusal is not None and refusal.reason == RejectReason.RATE_LIMIT
    assert "retry in 0.50 s" in refusal.message
    # another lease has its own bucket
    assert g.check_place(order(), lease="B", role=Role.TRADER) is None
    # a refused order does not use a token
    bad = g.check_place(order(quantity=0.0), lease="B", role=Role.TRADER)
    assert bad is not None and bad.reason == RejectReason.BAD_QUANTITY
    clock.t += 0.5
    assert g.check_place(order(), lease="A", role=Role.TRADER) is None
    assert g.check_place(order(), lease="A", role=Role.TRADER) is not None
    g.forget_lease("A")
    assert g.check_place(order(), lease="A", role=Role.TRADER) is None


def test_modify_checks() -> None:
    g = gate()
    current = OrderParams("BUY", 10.0, "LMT", 100.0, None, "DAY")
    ok = ModifyOrder(id=2, lease="L", order_id=5, limit_price=101.0)
    assert g.check_modify(ok, current, lease="L", role=Role.TRADER, last_price=100.0) is None
    far = ModifyOrder(id=2, lease="L", order_id=5, limit_price=200.0)
    refusal = g.check_modify(far, current, lease="L", role=Role.TRADER, last_price=100.0)
    assert refusal is not None and refusal.reason == RejectReason.PRICE_BAND
    zero = ModifyOrder(id=2, lease="L", order_id=5, quantity=0.0)
    refusal = g.check_modify(zero, current, lease="L", role=Role.TRADER)
    assert refusal is not None and refusal.reason == RejectReason.BAD_QUANTITY
    assert current.modified(ok).limit_price == 101.0 and current.modified(ok).quantity == 10.0


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_quantity"):
        RiskLimits(max_quantity=0)
    with pytest.raises(ValueError, match="price_band_pct"):
        RiskLimits(price_band_pct=-1)
