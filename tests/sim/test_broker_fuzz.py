"""Garbage in any broker request never raises out of the broker and always gets an answer or
nothing, never a crash; valid orders keep working afterwards."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.broker import HANDLED
from tests.ibclient import LimitOrder, Stock
from tests.sim.broker_support import place_order_fields


class _Session:
    client_id = 5

    def __init__(self) -> None:
        self.sent: list[tuple[object, ...]] = []
        self.errors: list[tuple[int, int, str]] = []

    def send(self, *fields: object) -> None:
        self.sent.append(fields)

    def send_error(self, req_id: int, code: int, message: str) -> None:
        self.errors.append((req_id, code, message))


_GATEWAY = SimGateway(SimConfig(seed=3, tick_rate=0.0))  # never started: no sockets, no tasks
_VALID = place_order_fields(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 1.0), 10**6)

_field = st.one_of(st.sampled_from(["", "0", "1", "-1", "1.5", "nan", "inf", "1e308", "BUY",
                                    "LMT", "AAPL", "STK", "SMART", "x" * 50]),
                   st.text(max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg_id=st.sampled_from(sorted(HANDLED)), fields=st.lists(_field, max_size=140))
def test_broker_survives_garbage(msg_id: int, fields: list[str]) -> None:
    session = _Session()
    _GATEWAY.broker.handle(session, [str(msg_id), *fields])  # must not raise
    for req_id, code, message in session.errors:
        assert isinstance(req_id, int) and code > 0 and message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.integers(1, len(_VALID) - 1), _field, max_size=6),
       cut=st.integers(2, len(_VALID)))
def test_broker_survives_damaged_place_orders(changes: dict[int, str], cut: int) -> None:
    """A real placeOrder with some fields replaced or the tail cut off."""
    fields = list(_VALID)
    for index, value in changes.items():
        fields[index] = value
    session = _Session()
    _GATEWAY.broker.handle(session, fields[:cut])  # must not raise
    for req_id, code, message in session.errors:
        assert isinstance(req_id, int) and code > 0 and message


def test_broker_still_trades_after_the_fuzzing() -> None:
    broker = _GATEWAY.broker
    session = _Session()
    order_id = broker.next_order_id(5) + 1
    fields = place_order_fields(Stock("MSFT", "SMART", "USD"), LimitOrder("BUY", 1, 1.0),
                                order_id)
    broker.handle(session, fields)
    assert not session.errors
    last = broker.orders()[-1]
    assert (last.order_id, last.symbol, last.status) == (order_id, "MSFT", "Submitted")
