"""IB's reqAccountSummary tag semantics over the hub's cache, and IB's order times.

Pure functions: plain tags per account in the base currency, $LEDGER (BASE only),
$LEDGER:ALL (every currency), $LEDGER:CCY (one), groups; goodTillDate parsing and the
hub's GTD checks.
"""

from __future__ import annotations

import datetime as dt

import pytest

from ibhub.orders.account_summary import select, wants
from ibhub.orders.order_types import gtd_refusal
from ibhub.protocol import RejectReason
from ibhub.tws.order_time import OrderTimeError, parse_order_time

ROWS = {
    ("DU1", "NetLiquidation", "USD"): "100",
    ("DU1", "Cushion", ""): "0.9",
    ("DU1", "CashBalance", "BASE"): "50",
    ("DU1", "CashBalance", "USD"): "40",
    ("DU1", "CashBalance", "EUR"): "9",
    ("DU1", "AccruedCash", "USD"): "1",
    ("DU1", "AccruedCash", "BASE"): "1",
    ("DU2", "NetLiquidation", "EUR"): "200",  # a EUR-based account
    ("DU2", "CashBalance", "BASE"): "70",
    ("DU2", "CashBalance", "EUR"): "70",
}
BASE = {"DU1": "USD", "DU2": "EUR"}


def rows(tags: list[str], group: str = "All") -> set[tuple[str, str, str]]:
    return {row for row, _ in select(ROWS, BASE, tags, group)}


def test_plain_tags_give_one_row_per_account_in_its_base_currency() -> None:
    assert rows(["NetLiquidation"]) == {("DU1", "NetLiquidation", "USD"),
                                        ("DU2", "NetLiquidation", "EUR")}
    assert rows(["Cushion"]) == {("DU1", "Cushion", "")}
    # AccruedCash is a summary tag and a ledger tag: as a plain tag, the base currency only
    assert rows(["AccruedCash"]) == {("DU1", "AccruedCash", "USD")}
    assert rows(["CashBalance"]) == set()  # a ledger tag, not a summary tag
    assert rows(["NetLiquidation"], group="DU2") == {("DU2", "NetLiquidation", "EUR")}


def test_ledger_forms() -> None:
    assert rows(["$LEDGER"]) == {("DU1", "CashBalance", "BASE"), ("DU1", "AccruedCash", "BASE"),
                                 ("DU2", "CashBalance", "BASE")}
    every = rows(["$LEDGER:ALL"], group="DU1")
    assert {cur for _, tag, cur in every if tag == "CashBalance"} == {"BASE", "USD", "EUR"}
    assert rows(["$LEDGER:EUR"]) == {("DU1", "CashBalance", "EUR"), ("DU2", "CashBalance", "EUR")}
    both = rows(["NetLiquidation", "$LEDGER:USD"], group="DU1")
    assert both == {("DU1", "NetLiquidation", "USD"), ("DU1", "CashBalance", "USD"),
                    ("DU1", "AccruedCash", "USD")}
    assert wants(["$LEDGER", "$LEDGER:all"]) == (frozenset(), frozenset({"BASE", "*"}))
    # no tag list: every plain tag, no ledger rows
    assert all(cur != "BASE" for _, _, cur in rows([]))


def test_order_times() -> None:
    east = parse_order_time("20270115 16:00:00 US/Eastern")
    assert east == dt.datetime(2027, 1, 15, 21, 0, tzinfo=dt.UTC)
    assert parse_order_time("20270115-16:00:00") == dt.datetime(2027, 1, 15, 16, tzinfo=dt.UTC)
    for bad in ("2027-01-15", "20271315 10:00:00", "20270115 10:00:00 Mars/Base"):
        with pytest.raises(OrderTimeError):
            parse_order_time(bad)


def test_gtd_checks() -> None:
    now = dt.datetime(2027, 1, 15, 12, tzinfo=dt.UTC)

    def refusal(tif: str, text: str) -> str | None:
        got = gtd_refusal(tif, text, lambda: now)
        return None if got is None else got[0]

    assert refusal("GTD", "20270115 13:00:00 UTC") is None
    assert refusal("GTD", "20270115 11:00:00 UTC") == RejectReason.BAD_TIF  # past
    assert refusal("GTD", "20270115-11:00:00") == RejectReason.BAD_TIF  # past, UTC form
    # no zone: the Gateway's time zone decides, so only the format is checked
    assert refusal("GTD", "20270115 11:00:00") is None
    assert refusal("GTD", "") == RejectReason.BAD_TIF
    assert refusal("DAY", "20270115 13:00:00 UTC") == RejectReason.BAD_TIF
    assert refusal("DAY", "") is None
