#!/usr/bin/env python3
"""A hub subscriber written from docs/protocol.md alone: pyzmq + msgspec, no ibhub.

Usage:
    python clients/raw_subscriber.py [--pub EP] [--rpc EP] [--subscribe SYM] [--count N] [TOPIC...]

TOPIC is a ZeroMQ prefix (default ``tick.``). The hub publishes a tick topic only
while some lease subscribes to it; ``--subscribe AAPL`` makes this script say hello,
subscribe and heartbeat itself (over a DEALER socket), so it also works alone.

It checks each topic's sequence numbers and, on a gap, fetches the topic's last
value with a snapshot request, as docs/protocol.md describes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import msgspec
import zmq
import zmq.auth

# ---------------------------------------------------------------- events (msgpack arrays)
# Every event is [tag, seq, ts_ns, ...fields]; the tag is the first element.


class Tick(msgspec.Struct, array_like=True, tag_field="t", tag="tick"):
    seq: int
    ts: int
    con_id: int
    symbol: str
    bid: float
    ask: float
    last: float
    bid_size: float
    ask_size: float
    last_size: float
    volume: float


class Ticks(msgspec.Struct, array_like=True, tag_field="t", tag="ticks"):
    """Several ticks of one topic in one message, numbered seq, seq + 1, ..."""

    seq: int
    ts: int
    ticks: list[Tick]


class Bar(msgspec.Struct, array_like=True, tag_field="t", tag="bar"):
    seq: int
    ts: int
    con_id: int
    symbol: str
    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


class Status(msgspec.Struct, array_like=True, tag_field="t", tag="status"):
    seq: int
    ts: int
    state: str
    kind: str
    code: int
    message: str
    reconnect_count: int


KnownEvent = Tick | Bar | Status
event_decoder = msgspec.msgpack.Decoder(KnownEvent | Ticks)
raw_decoder = msgspec.msgpack.Decoder()  # for events this script does not know

# ---------------------------------------------------------------- requests and replies (maps)


class Reply(msgspec.Struct):
    """The reply fields this script reads; unknown fields are ignored by design."""

    type: str
    id: int
    code: str = ""
    message: str = ""
    lease: str = ""
    token: str = ""  # welcome: the lease's secret, carried in every request's "lease"
    heartbeat_interval: float = 1.0
    topic: str = ""
    topics: list[str] = []
    events: list[msgspec.Raw] = []


encoder = msgspec.msgpack.Encoder()
reply_decoder = msgspec.msgpack.Decoder(Reply)


class Requester:
    """Requests over a DEALER: send [b"", payload], receive [b"", payload]."""

    def __init__(self, context: zmq.Context, endpoint: str, timeout: float = 5.0) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        apply_curve(self.sock)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.timeout_ms = int(timeout * 1000)
        self.next_id = 0

    def call(self, type_: str, **fields: object) -> Reply:
        self.next_id += 1
        request = {"type": type_, "id": self.next_id, **fields}
        self.sock.send_multipart([b"", encoder.encode(request)])
        deadline = time.monotonic() + self.timeout_ms / 1000
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                sys.exit(f"no reply to {type_!r} from the hub at {self.endpoint}")
            reply = reply_decoder.decode(self.sock.recv_multipart()[-1])
            if reply.id != self.next_id:
                continue  # a late reply to an earlier request
            if reply.type == "error":
                sys.exit(f"hub refused {type_!r}: {reply.code}: {reply.message}")
            return reply


def apply_curve(sock: zmq.Socket) -> None:
    """Keys for a hub that requires CURVE (docs/operations.md, "Security / remote
    clients"): ``IBHUB_SERVER_KEY`` is the hub's public key (Z85 text or its ``.key``
    file), ``IBHUB_CLIENT_KEY_FILE`` this client's ``.key_secret`` file. Unset: plain."""
    server = os.environ.get("IBHUB_SERVER_KEY")
    key_file = os.environ.get("IBHUB_CLIENT_KEY_FILE")
    if not server and not key_file:
        return
    if not server or not key_file:
        sys.exit("CURVE needs both IBHUB_SERVER_KEY and IBHUB_CLIENT_KEY_FILE")
    server_key = zmq.auth.load_certificate(server)[0] if os.path.isfile(server) \
        else server.encode()
    public, secret = zmq.auth.load_certificate(key_file)
    if secret is None:
        sys.exit(f"{key_file} holds no secret key: give the .key_secret file")
    sock.curve_serverkey = server_key
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:g}"


def show(topic: str, event: KnownEvent) -> None:
    if isinstance(event, Tick):
        print(f"{topic} #{event.seq} {event.symbol} bid {fmt(event.bid)} ask {fmt(event.ask)} "
              f"last {fmt(event.last)} size {fmt(event.last_size)} vol {fmt(event.volume)}",
              flush=True)
    elif isinstance(event, Bar):
        print(f"{topic} #{event.seq} {event.symbol} bar {event.time} o {event.open:g} "
              f"h {event.high:g} l {event.low:g} c {event.close:g} v {event.volume:g}", flush=True)
    else:
        print(f"{topic} #{event.seq} {event.state} {event.kind} {event.code} {event.message}",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("topics", nargs="*", default=["tick."], help="topic prefixes")
    parser.add_argument("--pub", default=os.environ.get("IBHUB_PUB", "tcp://127.0.0.1:5570"))
    parser.add_argument("--rpc", default=os.environ.get("IBHUB_RPC", "tcp://127.0.0.1:5571"))
    parser.add_argument("--subscribe", action="append", default=[], metavar="SYMBOL",
                        help="hold a hub subscription for SYMBOL (stock, SMART, USD)")
    parser.add_argument("--count", type=int, default=0, help="exit after N ticks/bars (0: never)")
    args = parser.parse_args()

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    for prefix in args.topics:
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    apply_curve(sub)
    sub.connect(args.pub)
    rpc = Requester(context, args.rpc)

    lease, beat_every, next_beat = "", 1.0, 0.0
    if args.subscribe:
        welcome = rpc.call("hello", name=f"raw_subscriber[{os.getpid()}]", role="readonly",
                           protocol=2)
        lease, beat_every = welcome.token, welcome.heartbeat_interval
        next_beat = time.monotonic() + beat_every
        for symbol in args.subscribe:
            spec = {"symbol": symbol, "sec_type": "STK", "exchange": "SMART", "currency": "USD"}
            reply = rpc.call("subscribe", lease=lease, contract=spec, kind="ticks")
            print(f"# subscribed {symbol} on {reply.topic}", file=sys.stderr, flush=True)

    last_seq: dict[str, int] = {}
    shown = 0
    try:
        while args.count <= 0 or shown < args.count:
            if lease and time.monotonic() >= next_beat:
                rpc.call("heartbeat", lease=lease)
                next_beat = time.monotonic() + beat_every
            if not sub.poll(100):
                continue
            topic_frame, payload = sub.recv_multipart()
            topic = topic_frame.decode()
            try:
                message = event_decoder.decode(payload)
            except msgspec.ValidationError:
                fields = raw_decoder.decode(payload)  # a newer event type: skip it politely
                print(f"# {topic}: skipping event type {fields[0]!r}", file=sys.stderr)
                continue
            # A batch is its ticks, in order, each handled as if it had come alone.
            for event in message.ticks if isinstance(message, Ticks) else (message,):
                previous = last_seq.get(topic)
                if previous is not None and 1 < event.seq <= previous:
                    continue  # already covered by a snapshot (seq 1 again: a new hub, accept)
                if previous is not None and event.seq > previous + 1:
                    print(f"# {topic}: gap after #{previous}, recovering from a snapshot",
                          file=sys.stderr)
                    snap = rpc.call("snapshot", topic=topic)
                    for name, raw in zip(snap.topics, snap.events, strict=True):
                        if name == topic:
                            latest = event_decoder.decode(raw)
                            if isinstance(latest, Tick | Bar | Status) and latest.seq > event.seq:
                                event = latest
                last_seq[topic] = event.seq
                show(topic, event)
                if not isinstance(event, Status):
                    shown += 1
                    if shown == args.count:
                        break
    except KeyboardInterrupt:
        pass
    finally:
        if lease:
            rpc.call("goodbye", lease=lease)
        sub.close()
        rpc.sock.close()
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
