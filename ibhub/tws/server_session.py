"""The server side of one TWS API connection: what every Gateway-like peer does.

:class:`TwsServerSession` is an ``asyncio.Protocol`` that reads the ``API\\0`` hello
and the ``vMIN..MAX`` version range, answers with the two-field handshake (server
version and connection time), frames requests with :class:`~ibhub.tws.codec.FrameReader`,
and sends replies and errors. It is shared by the simulated Gateway
(:class:`ibhub.sim.session.ClientSession`) and the hub's TWS front door
(:class:`ibhub.frontdoor.session.DownstreamSession`); each subclass keeps its own
dispatch table and policies (the simulator's pacing and faults, the front door's
in-order queue and client-id books).

Why a Protocol and not streams: both servers write pre-built tick batches straight
to ``transport.write``, and a Protocol tells them when the client stops reading
(``pause_writing``) so ticks are skipped, never queued.

A subclass supplies ``_opened``/``_gone`` (its server's bookkeeping) and
``_on_messages`` (what to do with the decoded requests); inside those it uses
``_message_id`` (handshake line, then the numeric message id), ``_check_started``
and ``_answer_failure`` so every error reply is worded the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import ClassVar, cast

from ibhub.tws.codec import FrameReader, ProtocolError, frame, parse_version_range

__all__ = [
    "FARM_OK",
    "HELLO",
    "KNOWN_WITHOUT_ID",
    "REQ_ID_INDEX",
    "RequestError",
    "TwsServerSession",
    "req_id_of",
]

HELLO = b"API\0"

#: Where the request id (or order id) sits in each client request at sv 176, so an
#: error can be sent on the id the client is waiting on. Requests that are not
#: listed carry no id (errors for them go to -1).
REQ_ID_INDEX: dict[int, int] = {
    1: 2, 2: 2, 3: 1, 4: 2, 7: 2, 9: 2, 10: 2, 11: 2, 19: 4, 20: 1, 21: 2, 22: 1, 23: 2,
    25: 2, 50: 2, 51: 2, 52: 2, 53: 2, 54: 2, 55: 2, 56: 2, 57: 2, 62: 2, 63: 2, 67: 2,
    68: 2, 69: 2, 70: 2, 74: 2, 75: 2, 76: 2, 77: 2, 78: 1, 79: 1, 81: 1, 83: 1, 84: 1,
    86: 1, 87: 1, 88: 1, 89: 1, 90: 1, 92: 1, 93: 1, 94: 1, 95: 1, 96: 1, 97: 1, 98: 1,
    100: 1, 101: 1, 102: 1, 103: 1, 104: 1,
}

#: Client request ids that exist at sv 176 but carry no request id.
KNOWN_WITHOUT_ID = frozenset(
    {5, 6, 8, 12, 13, 14, 15, 16, 17, 18, 24, 49, 58, 59, 61, 64, 65, 66, 71, 72, 73, 80,
     82, 85, 91, 99}
)

#: What a healthy Gateway tells a client right after START_API: error(-1, code, text).
FARM_OK = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)

_CLIENT_ID_IN_USE = ("Unable to connect as the client id is already in use. "
                     "Retry with a unique client id.")


def req_id_of(msg_id: int, fields: Sequence[str]) -> int:
    """The request (or order) id a request carries, -1 if none (errors go there)."""
    idx = REQ_ID_INDEX.get(msg_id)
    if idx is None or idx >= len(fields):
        return -1
    try:
        return int(fields[idx])
    except ValueError:
        return -1


class RequestError(Exception):
    """A request the server refuses; becomes ``error(reqId, code, message)``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TwsServerSession(asyncio.Protocol):
    """One client connection's handshake, framing and sending (see module docstring)."""

    #: this subclass's logger and how its log lines name a client ("client", "tws client")
    _log: ClassVar[logging.Logger] = logging.getLogger(__name__)
    _label: ClassVar[str] = "client"
    #: log level of "bad message" lines (a client's mistake, not the server's)
    _bad_request_level: ClassVar[int] = logging.WARNING
    #: (code, text with ``{msg_id}``) sent when a handler fails with a bug
    _internal_error: ClassVar[tuple[int, str]]

    def __init__(self, server_version: int, max_frame: int) -> None:
        self.server_version = server_version
        self.client_id: int = -1  # set by START_API
        self.started = False  # START_API received and accepted
        self.closed = False
        self.paused = False  # transport buffer full: ticks skip this client
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.connected_at = time.time()
        self._hello_done = False
        self._version_done = False
        self._pending = bytearray()
        self._reader = FrameReader(max_frame)

    # -- hooks for subclasses ----------------------------------------------
    def _opened(self) -> None:
        """The connection is up (``peer`` and ``transport`` are set)."""

    def _gone(self) -> None:
        """The connection is gone (``closed`` is already True)."""

    def _on_messages(self, messages: list[list[str]]) -> None:
        """Serve the decoded messages; the first one is the version range."""
        raise NotImplementedError

    # -- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance here
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._opened()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._gone()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if not self._hello_done:
                self._pending += data
                if len(self._pending) < len(HELLO):
                    return
                if bytes(self._pending[:4]) != HELLO:
                    got = bytes(self._pending[:4])
                    raise ProtocolError(f"expected 'API\\0' hello, got {got!r}")
                self._hello_done = True
                data = bytes(self._pending[4:])
                self._pending.clear()
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            self._log.warning("%s %s (clientId %s): %s; closing the socket", self._label,
                              self.peer, self.client_id, exc)
            self.abort()
            return
        self._on_messages(messages)

    # -- sending -----------------------------------------------------------
    def send(self, *fields: object) -> None:
        """Frame one message and write it (dropped silently once the socket is closed)."""
        if self.transport is not None and not self.closed:
            self.transport.write(frame(fields))

    def send_fields(self, fields: Sequence[object]) -> None:
        """:meth:`send` for a message built as a list (the message builders' output)."""
        if self.transport is not None and not self.closed:
            self.transport.write(frame(fields))

    def write(self, data: bytes) -> None:
        """Write pre-framed bytes (tick batches, pass-through replies)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_error(self, req_id: int, code: int, message: str) -> None:
        """error (4) at sv 176: six fields, the last is advancedOrderRejectJson."""
        self.send(4, 2, req_id, code, message, "")

    def reject(self, msg_id: int, fields: Sequence[str], cause: object) -> None:
        """321 on the request's id, in the Gateway's "Error validating request" words."""
        self.send_error(req_id_of(msg_id, fields), 321,
                        f"Error validating request.-'{msg_id}' : cause - {cause}")

    def welcome(self, next_id: int, accounts: Iterable[str],
                notices: Iterable[tuple[int, str]]) -> None:
        """What follows an accepted START_API: nextValidId (9), managedAccounts (15),
        then the farm / connectivity notices as ``error(-1, code, text)``."""
        self.send(9, 1, next_id)
        self.send(15, 1, ",".join(accounts))
        for code, text in notices:
            self.send_error(-1, code, text)

    def refuse_connection(self, code: int, message: str, accounts: Iterable[str]) -> None:
        """Refuse a connection over a client cap, after the version handshake, so that
        the client notices **at once**: ``error(-1, code, message)`` (the reason, logged
        by every library), then nextValidId and managedAccounts, then close.

        Why the two "welcome" messages: ib_insync and ib_async only leave their connect
        when both arrived (apiStart) or at their connect time-out; a socket that merely
        closes costs the script its whole time-out. With them, the client finds the
        socket closed on its first start-up request and its connect raises
        ``ConnectionError`` at once; an ibapi script gets the error, then
        connectionClosed. The order (reason first) keeps the cause at the top of the
        script's log. The decision is in docs/tws-front-door.md."""
        self.send_error(-1, code, message)
        self.send(9, 1, 1)
        self.send(15, 1, ",".join(accounts))
        self.close()

    def refuse_client_id(self) -> None:
        """The Gateway's answer to a client id already in use: 326, then close."""
        self.send_error(-1, 326, _CLIENT_ID_IN_USE)
        self.close()

    def close(self) -> None:
        """Close after flushing what is queued (e.g. the 326 error before the close)."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once, discarding queued output (a crash or restart)."""
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # -- receiving, for subclasses' dispatch ----------------------------------
    def _message_id(self, fields: list[str]) -> int | None:
        """The message id of one request, or None when this method has answered it:
        the first message is the version range (handshake), and a request without a
        numeric id gets 320."""
        if not self._version_done:
            self._on_version(fields)
            return None
        try:
            msg_id = int(fields[0]) if fields else -1
        except ValueError:
            msg_id = -1
        if msg_id < 0:
            self._log.warning("%s %s: message with no numeric id %r; ignoring", self._label,
                              self.peer, fields[:3])
            self.send_error(-1, 320, f"Error reading request. Message id {fields[:1]!r} "
                                     "is not a number")
            return None
        return msg_id

    def _check_started(self, msg_id: int, fields: list[str]) -> bool:
        """False (after a 321) for anything but START_API before START_API."""
        if msg_id == 71 or self.started:
            return True
        self._log.warning("%s %s sent message %d before START_API", self._label, self.peer,
                          msg_id)
        self.reject(msg_id, fields, "API client not started: send START_API (71) first")
        return False

    def _answer_failure(self, msg_id: int, fields: list[str], exc: Exception) -> None:
        """A handler's exception as an error reply on the request's id: a refusal
        keeps its code, a bad field gets 321 naming it, a bug gets ``_internal_error``
        (and a traceback in the log). The connection keeps serving."""
        if isinstance(exc, RequestError):
            self.send_error(req_id_of(msg_id, fields), exc.code, exc.message)
        elif isinstance(exc, (ValueError, IndexError)):
            self._log.log(self._bad_request_level, "%s %d: bad message %d %r: %s",
                          self._label, self.client_id, msg_id, fields[:6], exc)
            self.reject(msg_id, fields, exc)
        else:
            self._log.error("%s %d: handler for message %d failed on %r", self._label,
                            self.client_id, msg_id, fields[:6], exc_info=exc)
            code, text = self._internal_error
            self.send_error(req_id_of(msg_id, fields), code, text.format(msg_id=msg_id))

    def _on_version(self, fields: list[str]) -> None:
        text = fields[0] if fields else ""
        versions = parse_version_range(text)
        sv = self.server_version
        if versions is None:
            self._log.warning("%s %s: bad version string %r; closing", self._label, self.peer,
                              text)
            self.abort()
            return
        lo, hi = versions
        if not lo <= sv <= hi:
            self._log.warning("%s %s: version range %d..%d does not contain %d; closing",
                              self._label, self.peer, lo, hi, sv)
            self.abort()
            return
        self._version_done = True
        now = time.strftime("%Y%m%d %H:%M:%S", time.gmtime())
        self.send(sv, f"{now} Greenwich Mean Time")
