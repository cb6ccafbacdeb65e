"""Alerts without a hub: state transitions, IB code classification, the flood cap,
the JSON-lines file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ibhub.hub.ops.alerts import BURST, WINDOW, Alerts, is_order_rejection, is_pacing_violation
from ibhub.protocol import Error, Ok, OrderRejected, UpstreamState
from tests.helpers import wait_until


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**kw: object) -> tuple[Alerts, list[tuple[int, str]], Clock]:
    published: list[tuple[int, str]] = []
    clock = Clock()
    alerts = Alerts(publish=lambda code, msg: published.append((code, msg)), clock=clock,
                    **kw)  # type: ignore[arg-type]
    return alerts, published, clock


def test_lost_and_restored_follow_connected(caplog: pytest.LogCaptureFixture) -> None:
    alerts, published, clock = make()
    caplog.set_level(logging.WARNING, "ibhub.hub.ops.alerts")
    alerts.on_upstream_state(UpstreamState.CONNECTING, 0, "connecting")
    alerts.on_upstream_state(UpstreamState.CONNECTED, 0, "connected")
    assert published == []  # the first connect is not a restore
    alerts.on_upstream_state(UpstreamState.RECONNECTING, 0, "connection lost after 3.0s")
    clock.t += 12.5
    alerts.on_upstream_state(UpstreamState.RECONNECTING, 1100, "still down")  # no repeat
    alerts.on_upstream_state(UpstreamState.CONNECTED, 1102, "restored")
    assert [m.split(":")[0] for _, m in published] == ["upstream_lost", "upstream_restored"]
    assert "after 12.5s" in published[1][1] and published[1][0] == 1102
    assert alerts.recent[-1]["details"]["down_seconds"] == 12.5
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "ALERT upstream_lost" in caplog.records[0].getMessage()
    # Giving up without ever connecting is a loss too; stopping is not.
    alerts2, pub2, _ = make()
    alerts2.on_upstream_state(UpstreamState.CONNECTING, 0, "")
    alerts2.on_upstream_state(UpstreamState.DISCONNECTED, 0, "stopped")
    alerts2.on_upstream_state(UpstreamState.FAILED, 0, "gave up after 3 attempts")
    assert len(pub2) == 1 and "gave up" in pub2[0][1]


@pytest.mark.parametrize(("code", "message", "pacing", "order"), [
    (100, "Max rate of messages per second has been exceeded", True, False),
    (162, "Historical Market Data Service error message:HMDS query returned no data", False,
     False),
    (162, "Historical Market Data Service error message:Historical data request pacing "
          "violation", True, False),
    (420, "Invalid Real-time Query:Pacing violation", True, False),
    (201, "Order rejected - reason:...", False, True),
    # an error on a cancel is not a rejection: the order manager asks the Gateway
    (10147, "OrderId 7 that needs to be cancelled is not found.", False, False),
    (10148, "OrderId 7 that needs to be cancelled cannot be cancelled", False, False),
    (161, "Cancel attempted when order is not in a cancellable state.", False, False),
    (2104, "Market data farm connection is OK:usfarm", False, False),
])
def test_ib_codes(code: int, message: str, pacing: bool, order: bool) -> None:
    assert is_pacing_violation(code, message) is pacing
    assert is_order_rejection(code) is order
    alerts, published, _ = make()
    alerts._on_ib_error(7, code, message, None)
    kinds = [m.split(":")[0] for _, m in published]
    assert kinds == (["pacing_violation"] if pacing else ["order_rejected"] if order else [])


def test_rejected_replies_alert_others_do_not() -> None:
    alerts, published, _ = make()
    alerts.observe("place_order", Ok(id=1), 0.001)
    alerts.observe("place_order", Error(id=2, code="bad_request", message="x"), 0.001)
    alerts.observe("place_order", OrderRejected(id=3, client_order_id="c1", reason="risk",
                                                message="too big"), 0.001)
    assert len(published) == 1 and "c1" in published[0][1] and "too big" in published[0][1]


def test_a_flood_is_capped_per_kind_and_reports_what_it_suppressed() -> None:
    alerts, published, clock = make()
    for i in range(BURST + 5):
        alerts.raise_alert("order_rejected", f"r{i}")
    alerts.raise_alert("pacing_violation", "other kinds are not affected")
    assert len(published) == BURST + 1
    assert alerts.counts["order_rejected"] == BURST + 5
    clock.t += WINDOW + 1
    assert alerts.raise_alert("order_rejected", "after the window")
    assert alerts.recent[-1]["suppressed"] == 5 and "(+5 suppressed)" in published[-1][1]


def test_a_failing_publisher_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    def boom(code: int, msg: str) -> None:
        raise RuntimeError("publisher bug")

    alerts = Alerts(publish=boom)
    assert alerts.raise_alert("upstream_lost", "x")
    assert "publishing alert" in caplog.text


async def test_alert_file_gets_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "alerts.jsonl"
    alerts = Alerts(alert_file=path)
    alerts.start()
    try:
        alerts.raise_alert("upstream_lost", "one", 0, previous="CONNECTED")
        alerts.raise_alert("pacing_violation", "two", 100)
        await wait_until(lambda: alerts.delivered == 2, 5.0, "two lines written")
    finally:
        await alerts.stop()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["upstream_lost", "pacing_violation"]
    assert lines[0]["details"] == {"previous": "CONNECTED"} and lines[1]["code"] == 100
    assert set(lines[0]) >= {"kind", "message", "code", "ts", "state", "hub", "suppressed"}


async def test_unwritable_file_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    alerts = Alerts(alert_file=blocker / "alerts.jsonl")  # parent is a file
    alerts.start()
    try:
        alerts.raise_alert("upstream_lost", "x")
        await wait_until(lambda: alerts.delivery_failures == 1, 5.0, "failure counted")
    finally:
        await alerts.stop()


async def test_never_connecting_after_start_is_an_alert() -> None:
    published: list[tuple[int, str]] = []
    alerts = Alerts(publish=lambda c, m: published.append((c, m)), startup_grace=0.05,
                    state=lambda: UpstreamState.CONNECTING)
    alerts.start()
    try:
        await wait_until(lambda: published, 2.0, "start-up alert")
        assert "not connected 0.05s after the hub started" in published[0][1]
        assert alerts.recent[-1]["details"]["startup"] is True
    finally:
        await alerts.stop()
    # Connected in time: nothing.
    quiet: list[tuple[int, str]] = []
    alerts = Alerts(publish=lambda c, m: quiet.append((c, m)), startup_grace=0.05,
                    state=lambda: UpstreamState.CONNECTING)
    alerts.start()
    alerts.on_upstream_state(UpstreamState.CONNECTED, 0, "connected")
    handle = alerts._startup_timer
    assert handle is not None
    try:
        await wait_until(lambda: alerts._startup_timer is None, 2.0, "grace over")
        assert quiet == []
    finally:
        await alerts.stop()


def test_an_order_correction_names_the_order_its_owner_and_both_states() -> None:
    from ibhub.orders.updates import Correction

    alerts, published, _ = make()
    c = Correction(42, "alice", "coid-1", "Cancelled", "Submitted", "it is working there")
    alerts.on_order_corrected(c)
    (alert,) = alerts.recent
    assert alert["kind"] == "order_corrected"
    assert alert["details"] == {"order_id": 42, "owner": "alice", "client_order_id": "coid-1",
                                "journal_status": "Cancelled", "gateway_status": "Submitted"}
    assert alert["message"] == ("order 42 of alice (coid-1): the journal said Cancelled, the "
                                "Gateway says Submitted; it is working there")
    assert published[0][1].startswith("order_corrected: order 42 of alice")
