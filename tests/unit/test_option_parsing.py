"""Generic tick lists and option computations at the edges: what reaches the Gateway's
wire from a script's reqMktData, what the simulator accepts, and IB's "not computed"
markers in both directions."""

from __future__ import annotations

import math

import pytest

from ibhub.frontdoor.market import generic_tick_list
from ibhub.ib.option_queries import computation_of
from ibhub.ib.reader import _not_computed
from ibhub.sim.contracts import build_universe
from ibhub.sim.extra_ticks import computation_fields, parse_generic_ticks


def test_front_door_generic_tick_lists_are_normalised_or_refused() -> None:
    assert generic_tick_list("") == ""
    assert generic_tick_list("236, 233,233,101") == "101,233,236"  # one line for equal lists
    assert generic_tick_list("mdoff,233") == "233,mdoff"
    for bad in ("233;236", "2a", "233\x00,1", "-1", "12345", "\u00b2",
                ",".join(map(str, range(40)))):
        assert generic_tick_list(bad) is None, bad


def test_simulator_generic_ticks() -> None:
    aapl = next(i for i in build_universe() if i.symbol == "AAPL")
    assert parse_generic_ticks("233,236,mdoff", aapl) == {233, 236}
    assert parse_generic_ticks("105,293", aapl) == frozenset()  # known to IB, not simulated
    with pytest.raises(ValueError, match=r"Incorrect generic tick list of 233,999.*236\(Short"):
        parse_generic_ticks("233,999", aapl)


def test_not_computed_markers() -> None:
    fields = computation_fields(7, 13, None, 2.5, 590.0)
    assert len(fields) == 12 and fields[:4] == [21, 7, 13, 1]
    assert fields[4:] == [-1.0, -2.0, 2.5, -1.0, -2.0, -2.0, -2.0, 590.0]
    assert math.isnan(_not_computed(b"-2", -2.0)) and math.isnan(_not_computed(b"", -1.0))
    assert _not_computed(b"-0.5", -2.0) == -0.5  # a negative delta is a value
    assert math.isnan(_not_computed(b"1.7976931348623157E308", -1.0))
    assert computation_of(None) is None

    class Comp:  # the library's OptionComputation: None where IB computed nothing
        impliedVol, delta, optPrice, pvDividend = 0.2, None, 3.0, 0.0
        gamma, vega, theta, undPrice = 0.01, 0.1, -0.02, float("inf")

    c = computation_of(Comp())
    assert c is not None and c.implied_vol == 0.2 and math.isnan(c.delta)
    assert math.isnan(c.und_price)
