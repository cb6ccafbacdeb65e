"""The hub's XPUB (ibhub.hub.xpub): it sends a topic only while somebody subscribes to it,
and a subscriber still gets everything it asked for, end to end (sim, hub, raw SUBs)."""

from __future__ import annotations

import zmq

from ibhub import wire
from ibhub.hub.server import HubServer
from ibhub.protocol import Bundle, GetSnapshot, HubStatus, Snapshot, Tick
from tests.e2e.conftest import assert_consecutive, wait_until


async def test_hub_sends_only_what_somebody_subscribes_to(hub: HubServer, clients, listeners,
                                                         zctx) -> None:
    subs, fan = hub.pub_subscriptions, hub.fanout
    assert subs is not None and fan is not None
    pub = fan.publisher
    ep = hub.pub_endpoint

    # Nothing is published yet: the loop's reader (the XPUB's FD) sees a subscription.
    status = listeners(ep, "hub.")
    await wait_until(lambda: subs.interest.prefixes == {b"hub."}, 5.0, "hub. subscription")
    fan.status("CONNECTED", "ib", 0, "probe", 0)
    await wait_until(lambda: any(isinstance(e, HubStatus) and e.message == "probe"
                                 for e in status.on("hub.status")), 5.0, "the status event")

    # Lines open, nobody listens to ticks: they are stamped and kept, never sent.
    c = clients(hub.rpc_endpoint)
    await c.hello("xpub")
    await c.subscribe("AAPL")
    await c.subscribe("MSFT")
    await wait_until(lambda: pub.skipped >= 20 and fan.topic("tick.MSFT").seq >= 5, 5.0,
                     "ticks nobody wants")
    assert fan.topic("bundle.tick").seq > 0  # reads counted, no bundle encoded

    # A late per-topic subscriber, then a snapshot: the stream continues from it.
    aapl = listeners(ep, "tick.AAPL")
    await wait_until(lambda: b"tick.AAPL" in subs.interest.prefixes, 5.0, "tick.AAPL sub")
    snap = await c.request(GetSnapshot(id=c.next_id(), topic="tick.AAPL"))
    assert isinstance(snap, Snapshot) and snap.topics == ["tick.AAPL"], snap
    last = wire.decode_event(bytes(snap.events[0]))
    assert isinstance(last, Tick) and last.seq == snap.seqs[0] >= 5
    await wait_until(lambda: any(t.seq > last.seq + 3 for t in aapl.on("tick.AAPL")), 5.0,
                     "ticks after the snapshot")
    assert_consecutive(aapl.on("tick.AAPL"), "late tick.AAPL subscriber")
    assert aapl.on("tick.AAPL")[0].seq <= last.seq + 1
    assert not aapl.on("tick.MSFT")

    # The bundle and everything ("") subscribers get theirs too.
    bundle, everything = listeners(ep, "bundle.tick"), listeners(ep, "")
    await wait_until(lambda: {b"bundle.tick", b""} <= subs.interest.prefixes, 5.0,
                     "bundle and everything subscriptions")
    await wait_until(lambda: len(bundle.on("bundle.tick")) >= 5
                     and len(everything.on("tick.MSFT")) >= 5
                     and len(everything.on("bundle.tick")) >= 5, 5.0, "bundles and ticks")
    bundled = {name for b in bundle.on("bundle.tick") if isinstance(b, Bundle)
               for name, _ in b.messages}
    assert bundled == {"tick.AAPL", "tick.MSFT"}
    assert_consecutive(everything.on("tick.MSFT"), "everything subscriber")

    # They leave (one unsubscribes, one disconnects): tick.MSFT is skipped again.
    everything.sock.unsubscribe(b"")
    await bundle.close()
    await wait_until(lambda: subs.interest.prefixes == {b"hub.", b"tick.AAPL"}, 5.0,
                     "unsubscriptions")
    skipped = pub.skipped
    await wait_until(lambda: pub.skipped >= skipped + 5, 5.0, "tick.MSFT skipped again")

    # A peer that sends junk on the PUB endpoint is counted, and changes nothing.
    raw = zctx.socket(zmq.XSUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(ep)
    try:
        await raw.send(b"\x07junk")
        await raw.send(b"")
        await wait_until(lambda: subs.malformed == 2, 5.0, "malformed messages counted")
    finally:
        raw.close(0)
    n = len(aapl.on("tick.AAPL"))
    await wait_until(lambda: len(aapl.on("tick.AAPL")) > n + 3, 5.0, "ticks still flowing")
    assert_consecutive(aapl.on("tick.AAPL"), "tick.AAPL subscriber")

    assert hub.ops is not None
    metrics = hub.ops.metrics.render().decode()
    assert "ibhub_pub_subscribed_prefixes 2.0" in metrics
    assert 'ibhub_pub_subscription_messages_total{what="malformed"} 2.0' in metrics
    assert "ibhub_pub_skipped_total " in metrics
