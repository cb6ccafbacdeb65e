"""Framing and contract matching, without sockets."""

from __future__ import annotations

import struct
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibhub.sim.codec import (
    UNSET_DOUBLE,
    UNSET_INT,
    FrameReader,
    ProtocolError,
    fmt,
    fmt_float,
    frame,
)
from ibhub.sim.contracts import ContractQuery, build_universe, contract_details_fields, parse_c12


def test_frame_layout() -> None:
    assert frame([9, 1, 1]) == b"\x00\x00\x00\x069\x001\x001\x00"
    assert frame([15, 1, "DU123456"]) == b"\x00\x00\x00\x0e15\x001\x00DU123456\x00"
    assert fmt(True) == "1" and fmt(False) == "0" and fmt(None) == ""
    assert fmt(UNSET_INT) == "2147483647"


@pytest.mark.parametrize(("value", "text"), [
    (190.01, "190.01"), (0.0, "0.0"), (100.0, "100.0"), (1.08505, "1.08505"),
    (UNSET_DOUBLE, "1.7976931348623157E308"), (float("nan"), ""), (-1.0, "-1.0"),
])
def test_fmt_float(value: float, text: str) -> None:
    assert fmt_float(value) == text


# the surrogate category (a str that cannot be encoded as UTF-8)
NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)


@given(st.lists(st.lists(st.text(alphabet=st.characters(blacklist_characters="\0",
                                                          blacklist_categories=NO_SURROGATES)),
                         min_size=1, max_size=8), max_size=8),
       st.integers(min_value=1, max_value=7))
def test_frame_reader_round_trip_in_any_chunks(messages: list[list[str]], chunk: int) -> None:
    data = b"".join(frame(m) for m in messages)
    reader = FrameReader()
    out: list[list[str]] = []
    for i in range(0, len(data), chunk):
        out.extend(reader.feed(data[i : i + chunk]))
    assert out == messages
    assert reader.buffered == 0


def test_frame_reader_rejects_bad_lengths() -> None:
    with pytest.raises(ProtocolError, match="bad length prefix 0"):
        FrameReader().feed(struct.pack(">I", 0))
    with pytest.raises(ProtocolError, match=r"allowed 1\.\.100"):
        FrameReader(max_frame=100).feed(struct.pack(">I", 101))
    reader = FrameReader()
    assert reader.feed(struct.pack(">I", 4) + b"ab") == []  # incomplete: waits
    assert reader.feed(b"\xff\0") == [["ab\\xff"]]  # bad UTF-8 never raises


def test_resolve_like_the_gateway() -> None:
    u = build_universe()
    q = parse_c12(["0", "aapl", "STK", "", "0.0", "", "", "SMART", "", "USD", "", ""], 0)
    assert [i.con_id for i in u.resolve(q)] == [265598]
    assert [i.con_id for i in u.resolve(["265598"] + [""] * 11)] == [265598]
    assert u.resolve(ContractQuery(symbol="AAPL", currency="EUR")) == []
    # the ETF and its chain: 3 monthly expiries x 17 strikes x call/put
    assert len(u.resolve(ContractQuery(symbol="SPY"))) == 1 + 3 * 17 * 2
    assert u.resolve_one(ContractQuery(symbol="SPY")) is None  # ambiguous
    spy_calls = u.resolve(ContractQuery(symbol="SPY", sec_type="OPT", right="C"))
    assert len(spy_calls) == 51 and {i.right for i in spy_calls} == {"C"}
    front = min(i.last_trade_date for i in spy_calls)
    [call] = u.resolve(["0", "SPY", "OPT", front, "590", "CALL", "100", "SMART", "", "USD",
                        "", ""])
    assert call.local_symbol.startswith("SPY   ") and call.local_symbol.endswith("C00590000")
    es_months = u.resolve(ContractQuery(symbol="ES", sec_type="FUT", exchange="CME"))
    assert len(es_months) == 4  # the quarterly cycle
    es = min(es_months, key=lambda i: i.last_trade_date)
    assert {int(i.last_trade_date[4:6]) % 3 for i in es_months} == {0}
    assert u.resolve(ContractQuery(symbol="ES", sec_type="FUT",
                                   last_trade_date=es.last_trade_date[:6])) == [es]
    fops = u.resolve(ContractQuery(symbol="ES", sec_type="FOP"))
    assert len(fops) == 10 and {i.under_con_id for i in fops} == {es.con_id}
    assert {i.last_trade_date for i in fops} == {es.last_trade_date}
    assert u.resolve(ContractQuery(local_symbol=es.local_symbol)) == [es]
    assert u.resolve(ContractQuery(symbol="ES", exchange="SMART")) == []  # futures are not SMART
    [eur] = u.resolve(ContractQuery(symbol="EUR", sec_type="CASH", currency="USD",
                                    exchange="IDEALPRO"))
    assert eur.min_tick == 0.00005 and not eur.trades
    assert len({i.con_id for i in u}) == len(u) >= 160


def test_parse_c12_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="conId 'x1'"):
        parse_c12(["x1", "AAPL"] + [""] * 10, 0)
    with pytest.raises(ValueError, match="strike"):
        parse_c12(["0", "AAPL", "OPT", "", "abc"] + [""] * 7, 0)
    with pytest.raises(ValueError, match="12 fields"):
        parse_c12(["0", "AAPL"], 0)


def test_contract_details_has_40_fields_and_ascii_names() -> None:
    for inst in build_universe():
        fields = contract_details_fields(1, inst)
        assert len(fields) == 40, inst.symbol
        assert inst.long_name.isascii()
        assert fields[12] == inst.con_id and isinstance(fields[12], int)
