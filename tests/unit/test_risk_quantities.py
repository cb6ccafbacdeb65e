"""Quantity rules per security type, and the trading-mode wording, in the risk gate."""

from __future__ import annotations

import math

import pytest

from ibhub.orders.risk import (
    DEFAULT_MAX_BY_SEC_TYPE,
    MIN_FRACTIONAL_SHARES,
    OrderParams,
    RiskGate,
    RiskLimits,
    Role,
    quantity_refusal,
)
from ibhub.protocol import ContractSpec, ModifyOrder, PlaceOrder, RejectReason


def order(sec_type: str = "STK", quantity: float = 1.0, con_id: int = 0) -> PlaceOrder:
    spec = ContractSpec(symbol="X" if not con_id else "", sec_type=sec_type, con_id=con_id)
    return PlaceOrder(id=1, lease="L", client_order_id="c", contract=spec, action="BUY",
                      quantity=quantity, order_type="MKT")


@pytest.mark.parametrize(
    ("sec_type", "quantity", "rule"),
    [
        ("STK", 1e-9, "whole shares"),
        ("STK", 0.5, "whole shares"),
        ("STK", 100.5, "whole shares"),
        ("stk", 2.25, "whole shares"),
        ("FUT", 0.5, "whole contracts"),
        ("OPT", 1.5, "whole contracts"),
        ("FOP", 0.999, "whole contracts"),
        ("CASH", 1e-9, "min_fx_quantity"),
        ("CASH", 0.5, "min_fx_quantity"),
        ("STK", math.nan, "> 0"),
        ("CASH", math.inf, "> 0"),
        ("CRYPTO", -1.0, "> 0"),
    ],
)
def test_bad_quantities_are_refused_naming_the_rule(sec_type: str, quantity: float,
                                                    rule: str) -> None:
    refusal = quantity_refusal(quantity, sec_type, RiskLimits())
    assert refusal is not None and refusal.reason == RejectReason.BAD_QUANTITY
    assert rule in refusal.message


@pytest.mark.parametrize(
    ("sec_type", "quantity"),
    [("STK", 1.0), ("STK", 10_000.0), ("FUT", 3.0), ("OPT", 1.0), ("CASH", 25_000.0),
     ("CASH", 1_000_000.0), ("CASH", 12_345.67), ("CRYPTO", 0.01), ("", 0.5)],
)
def test_good_quantities_pass(sec_type: str, quantity: float) -> None:
    assert quantity_refusal(quantity, sec_type, RiskLimits()) is None


def test_maximum_is_per_security_type() -> None:
    limits = RiskLimits(max_quantity_by_sec_type={"CASH": 2e6, "FUT": 50.0})
    assert quantity_refusal(2e6, "CASH", limits) is None
    fut = quantity_refusal(51, "FUT", limits)
    assert fut is not None and fut.reason == RejectReason.QUANTITY_LIMIT
    assert "max_quantity_by_sec_type[FUT]" in fut.message
    stk = quantity_refusal(10_001, "STK", limits)
    assert stk is not None and stk.reason == RejectReason.QUANTITY_LIMIT
    assert "(max_quantity)" in stk.message
    assert DEFAULT_MAX_BY_SEC_TYPE["CASH"] >= 25_000  # a standard FX order passes


def test_fractional_shares_setting() -> None:
    limits = RiskLimits(fractional_shares=True)
    assert quantity_refusal(0.5, "STK", limits) is None
    assert quantity_refusal(MIN_FRACTIONAL_SHARES, "STK", limits) is None
    dust = quantity_refusal(1e-9, "STK", limits)
    assert dust is not None and dust.reason == RejectReason.BAD_QUANTITY
    assert quantity_refusal(0.5, "FUT", limits) is not None  # futures stay whole


def test_sec_type_of_a_request_is_used_unless_it_names_a_con_id() -> None:
    gate = RiskGate(RiskLimits(), upstream_port=4002, accounts=["DU1"])
    refusal = gate.check_static(order("STK", 0.5), role=Role.TRADER)
    assert refusal is not None and refusal.reason == RejectReason.BAD_QUANTITY
    # a con_id-only spec's sec_type is just the default: wait for the resolved contract
    assert gate.check_static(order("STK", 25_000.5, con_id=12087792), role=Role.TRADER) is None
    refusal = gate.check_band_and_rate(order("STK", 25_000.5, con_id=12087792), lease="L",
                                       last_price=None, sec_type="CASH")
    assert refusal is None
    refusal = gate.check_band_and_rate(order("STK", 0.5, con_id=265598), lease="L",
                                       last_price=None, sec_type="STK")
    assert refusal is not None and refusal.reason == RejectReason.BAD_QUANTITY


def test_modify_keeps_the_order_s_security_type_rules() -> None:
    gate = RiskGate(RiskLimits(), upstream_port=4002, accounts=["DU1"])
    current = OrderParams("BUY", 10.0, "LMT", 100.0, None, "DAY", sec_type="STK")
    modify = ModifyOrder(id=1, lease="L", order_id=5, quantity=0.5)
    refusal = gate.check_modify(modify, current, lease="L", role=Role.TRADER)
    assert refusal is not None and refusal.reason == RejectReason.BAD_QUANTITY
    fx = OrderParams("BUY", 25_000.0, "MKT", None, None, "DAY", sec_type="CASH")
    assert gate.check_modify(ModifyOrder(id=2, lease="L", order_id=6, quantity=30_000.5), fx,
                             lease="L", role=Role.TRADER) is None


@pytest.mark.parametrize(
    ("port", "accounts", "allow_live", "words"),
    [
        (4002, [], False, "trading allowed (paper port 4002; accounts not known"),
        (4002, ["DU1"], False, "trading allowed (paper: port 4002, account(s) DU1)"),
        (4001, [], True, "LIVE trading allowed (--live): the Gateway port 4001"),
        (4002, ["U123"], True, "LIVE trading allowed (--live): account(s) U123"),
        (7496, [], False, "live trading is off"),
    ],
)
def test_trading_mode_wording(port: int, accounts: list[str], allow_live: bool,
                              words: str) -> None:
    gate = RiskGate(RiskLimits(allow_live=allow_live), upstream_port=port, accounts=accounts)
    assert words in gate.trading_mode
    if gate.live:
        assert "paper" not in gate.trading_mode.split(":")[0]


def test_limits_refuse_bad_per_type_settings() -> None:
    with pytest.raises(ValueError, match="max_quantity_by_sec_type"):
        RiskLimits(max_quantity_by_sec_type={"CASH": 0.0})
    with pytest.raises(ValueError, match="min_fx_quantity"):
        RiskLimits(min_fx_quantity=math.nan)
