"""The lane's pure parts: the framing, the setting's rules, the sequencer's second copy,
the SDK's choice of whether a lane is reachable, and lane routes in the lease table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ibhub import wire
from ibhub.client.lane import reachable
from ibhub.client.sequencer import TopicSequencer
from ibhub.config import HubSettings
from ibhub.hub.leases import LeaseTable, Peer
from ibhub.protocol import ErrorEvent


def test_frames_split_across_reads_and_refuse_oversize() -> None:
    frames = wire.LaneFrames(limit=100)
    data = wire.lane_frame(b"one") + wire.lane_frame(b"") + wire.lane_frame(b"three")
    got: list[bytes] = []
    for i in range(len(data)):  # one byte at a time: every split point
        got += frames.feed(data[i:i + 1])
    assert got == [b"one", b"", b"three"] and frames.buffered == 0
    event = wire.lane_event_frame(b"order.x", b"\x93\xa5order\x01\x02")
    assert frames.feed(event) == [b"e\x07order.x\x93\xa5order\x01\x02"]
    assert frames.feed(wire.lane_reply_frame(b"\x80")) == [b"r\x80"]
    with pytest.raises(wire.LaneFrameError, match="101 bytes is above the limit of 100"):
        frames.feed((101).to_bytes(4, "big"))


@pytest.mark.parametrize("value", ["unix", "off", "tcp://127.0.0.1:0", "tcp://[::1]:7000",
                                   "tcp://localhost:7001"])
def test_lane_setting_accepts_unix_off_and_loopback(value: str) -> None:
    assert HubSettings(lane=value).lane == value


@pytest.mark.parametrize(("value", "why"), [
    ("tcp://0.0.0.0:7000", "loopback only"), ("tcp://10.0.0.5:7000", "loopback only"),
    ("tcp://127.0.0.1", "expected tcp://127.0.0.1:PORT"), ("ipc:///tmp/x", "expected 'unix'"),
    ("tcp://127.0.0.1:99999", "expected tcp://"),
])
def test_lane_setting_refuses_other_binds(value: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        HubSettings(lane=value)


def ev(seq: int) -> ErrorEvent:
    return ErrorEvent(seq, 0, "l", 200, f"m{seq}", "", "")


def test_offer_delivers_the_first_copy_once_and_never_starts_a_recovery() -> None:
    delivered: list[int] = []
    snapshots: list[str] = []
    seq = TopicSequencer("error.l", lambda e: delivered.append(e.seq), snapshots.append)
    seq.on_event(ev(1))  # baseline from SUB
    seq.offer(ev(2))  # the lane first
    seq.on_event(ev(2))  # SUB's copy: a duplicate, not stale
    seq.on_event(ev(3))  # SUB first
    seq.offer(ev(3))  # the lane's copy: dropped
    seq.offer(ev(5))  # the lane ahead (it dropped 4 for a slow reader): left to SUB
    assert snapshots == [] and seq.gaps == 0
    seq.on_event(ev(4))
    seq.on_event(ev(5))
    assert delivered == [1, 2, 3, 4, 5]
    assert (seq.duplicates, seq.stale) == (2, 0)  # SUB's copy of 2, the lane's of 3
    # a copy of seq 1 after the lane delivered it is a duplicate, not a hub restart
    fresh = TopicSequencer("error.m", lambda e: delivered.append(100 + e.seq),
                           snapshots.append)
    fresh.sync(request=False)
    fresh.on_snapshot(None)
    fresh.on_event(ev(1))
    fresh.offer(ev(2))
    fresh.on_event(ev(2))
    assert delivered[-2:] == [101, 102] and fresh.duplicates == 1
    # while recovering, lane copies are buffered and merged like live events
    fresh.sync(request=False)
    fresh.offer(ev(3))
    fresh.on_event(ev(3))
    fresh.on_snapshot(None)
    assert delivered[-1] == 103 and delivered.count(103) == 1


def test_reachable_needs_the_socket_file_or_a_local_request_endpoint(tmp_path: object) -> None:
    assert not reachable("unix:///nonexistent/lane.sock", "tcp://127.0.0.1:5571")
    assert reachable(f"unix://{__file__}", "tcp://127.0.0.1:5571")
    assert reachable("tcp://127.0.0.1:7000", "ipc:///tmp/rpc")
    assert reachable("tcp://127.0.0.1:7000", "tcp://127.0.0.1:5571")
    assert not reachable("tcp://127.0.0.1:7000", "tcp://hub.example:5571")
    assert not reachable("", "tcp://127.0.0.1:5571")


def test_a_lane_route_counts_as_the_lease_connection_only_for_its_own_lease() -> None:
    table = LeaseTable(id_range=(1, 10), ttl=5.0)
    a = table.open("a", "trader", Peer(b"zmq-a", "KEY"))
    b = table.open("b", "trader", Peer(b"zmq-b", "KEY"))
    a.lanes.add(b"lane\0x")
    assert table.resolve(a.token, Peer(b"lane\0x", "KEY")) is a
    assert table.resolve(b.token, Peer(b"lane\0x", "KEY")) is None
    assert table.resolve(a.token, Peer(b"lane\0x", "OTHER")) is None  # CURVE key too
    assert table.resolve(a.token, Peer(b"lane\0y", "KEY")) is None
