"""frontdoor/learned.py: a contract read off a passed-through contractDetails reply
(built here by the simulator's own encoder) is what the hub resolves by conId."""

from __future__ import annotations

from ibhub.frontdoor.learned import info_from_details
from ibhub.sim.contracts import build_universe, contract_details_fields
from ibhub.tws.codec import frame_payload


def test_contract_details_reply_becomes_contract_info() -> None:
    universe = build_universe()
    for symbol in ("AAPL", "EUR", "ES"):
        inst = next(i for i in universe if i.symbol == symbol)
        parts = frame_payload(contract_details_fields(7, inst)).split(b"\0")
        info = info_from_details(parts)
        assert info is not None
        assert (info.con_id, info.symbol, info.sec_type, info.currency) == (
            inst.con_id, inst.symbol, inst.sec_type, inst.currency)
        assert info.min_tick == inst.min_tick and info.time_zone == inst.time_zone
        assert info.local_symbol == inst.local_symbol and info.long_name == inst.long_name
    assert info_from_details([b"10", b"7", b"AAPL"]) is None  # truncated: not learned
