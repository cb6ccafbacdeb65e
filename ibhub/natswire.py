"""The only code that knows ibhub's NATS layout (subjects, stream names, headers).

The NATS bridge (:mod:`ibhub.hub.nats_bridge`) and the SDK's NATS transport
(:mod:`ibhub.client.nats_link`) both build on it, as :mod:`ibhub.wire` is the one
place that knows the ZeroMQ frames (docs/scale-out.md, "Subjects"):

* events: ``ibhub.<hub>.<topic>``: the ZeroMQ topic ``tick.AAPL`` of hub ``paper`` is
  ``ibhub.paper.tick.AAPL``; the payload is the ZeroMQ wire's payload byte for byte
  (msgpack ``Event``), and the header ``Ibhub-Seq`` carries the message's sequence
  number (a ``Ticks`` batch: its first tick's), ``Ibhub-Epoch`` the hub process's
  start time in ns (a restarted hub counts from 1 again under a new epoch);
* requests: ``ibhub.<hub>.rpc.<user>``, NATS request-reply, the payload a msgpack
  ``Request``, the reply a msgpack ``Reply``. ``<user>`` is the NATS user (or nkey)
  the server authenticated: the server's publish permissions let each user publish
  only under its own name, so the hub takes the identity from the subject;
* one JetStream stream per hub, ``IBHUB_<hub>``, on the event families below (never
  on ``rpc``: a stream on the request subject would answer every request with a
  publish acknowledgement).

A topic token NATS cannot carry (``*``, ``>``, white space, ``%``, empty) is
percent-encoded (``BRK B`` -> ``BRK%20B``); :func:`topic_of` undoes it. ``bundle.tick``
is never mirrored: NATS wildcards (``ibhub.paper.tick.>``) give a consumer every
instrument at once, and a second copy of every tick would double the stream.
"""

from __future__ import annotations

import re
from typing import Final

SUBJECT_ROOT: Final = "ibhub"
SEQ_HEADER: Final = "Ibhub-Seq"
#: The hub process's start (ns): sequence numbers run unbroken only within one epoch, so
#: a value from the stream is a valid recovery point only if its epoch is the live one.
EPOCH_HEADER: Final = "Ibhub-Epoch"
RPC_TOKEN: Final = "rpc"
#: Topic families the hub publishes (protocol.TOPIC_*), each a subject tree in the stream.
FAMILIES: Final = ("tick", "bar", "order", "error", "hub", "account", "position")
NOT_MIRRORED: Final = ("bundle.tick",)

_UNSAFE = re.compile(r"[\s*>%\x00-\x1f\x7f]")


def _escape_token(token: str) -> str:
    if not token:
        return "%"
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), token)


def _unescape_token(token: str) -> str:
    if token == "%":
        return ""
    if "%" not in token:
        return token
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%" and _is_hex(token[i + 1:i + 3]):
            raw.append(int(token[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(token[i].encode())
            i += 1
    return raw.decode(errors="replace")


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def prefix(hub: str) -> str:
    """``ibhub.<hub>.``: every subject of ``hub`` starts with it."""
    return f"{SUBJECT_ROOT}.{hub}."


def subject_of(hub: str, topic: str) -> str:
    """The subject a ZeroMQ topic is mirrored to."""
    return prefix(hub) + ".".join(_escape_token(t) for t in topic.split("."))


def topic_of(hub: str, subject: str) -> str | None:
    """The ZeroMQ topic of an event subject of ``hub`` (None: not one of its events)."""
    head = prefix(hub)
    if not subject.startswith(head):
        return None
    return ".".join(_unescape_token(t) for t in subject[len(head):].split("."))


def filter_of(hub: str, topic: str) -> str:
    """The subject filter for a topic or, ending in ``.``, everything under it
    (``tick.`` -> ``ibhub.<hub>.tick.>``)."""
    if topic.endswith("."):
        return subject_of(hub, topic[:-1]) + ".>"
    return subject_of(hub, topic)


def rpc_subject(hub: str, user: str) -> str:
    """Where ``user`` sends its requests to ``hub``."""
    return f"{prefix(hub)}{RPC_TOKEN}.{_escape_token(user)}"


def rpc_filter(hub: str) -> str:
    """What the hub subscribes to: every user's requests."""
    return f"{prefix(hub)}{RPC_TOKEN}.*"


def stream_name(hub: str) -> str:
    """The JetStream stream of ``hub`` (names may not contain ``.``)."""
    return f"IBHUB_{hub}"


def stream_subjects(hub: str) -> list[str]:
    """The stream's subjects: every event family, never ``rpc``."""
    head = prefix(hub)
    return [f"{head}{family}.>" for family in FAMILIES]
