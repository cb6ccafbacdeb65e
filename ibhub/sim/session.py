"""One client's TCP connection to the simulated Gateway.

:class:`ClientSession` is an ``asyncio.Protocol``: it reads the ``API\\0`` hello and
the version range, answers the two-field handshake, waits for START_API (71), and
then dispatches every framed request through the gateway's table (message id ->
handler). It also owns what the Gateway does per connection: pacing (error 100,
message dropped), bad-input replies, and closing the socket on broken framing.

Why a Protocol and not streams: the streaming engine writes one pre-built batch per
timer slice straight to ``transport.write``; a Protocol also tells us when the
client stops reading (``pause_writing``) so the engine can skip, not queue, ticks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ibhub.sim.codec import FrameReader, ProtocolError, frame, parse_version_range

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["REQ_ID_INDEX", "ClientSession", "Handler", "RequestError"]

log = logging.getLogger(__name__)

Handler = Callable[["ClientSession", list[str]], None]

_HELLO = b"API\0"

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


class RequestError(Exception):
    """A request the simulator refuses; becomes ``error(reqId, code, message)``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClientSession(asyncio.Protocol):
    """State of one API client connection (see module docstring)."""

    def __init__(self, gateway: SimGateway) -> None:
        self.gateway = gateway
        self.client_id: int = -1  # set by START_API
        self.server_version = gateway.config.server_version
        self.market_data_type = 1
        self.started = False  # START_API received and accepted
        self.closed = False
        self.paused = False  # transport buffer full: streaming skips this client
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self._hello_done = False
        self._version_done = False
        self._stalled = False
        self._reader = FrameReader(gateway.config.max_frame)
        self._pending = bytearray()
        rate = gateway.config.max_msg_rate
        self._tokens = rate
        self._last_refill = time.monotonic()
        self._second = 0  # for the "rec=N" count in error 100
        self._in_second = 0
        self.connected_at = time.time()

    # -- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance here
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._stalled = self.gateway.handshakes_stalled
        self.gateway._session_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway._session_closed(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.closed or self._stalled:
            return  # a stalled handshake reads and never answers, like a hidden dialog
        try:
            if not self._hello_done:
                self._pending += data
                if len(self._pending) < len(_HELLO):
                    return
                if bytes(self._pending[:4]) != _HELLO:
                    got = bytes(self._pending[:4])
                    raise ProtocolError(f"expected 'API\\0' hello, got {got!r}")
                self._hello_done = True
                data = bytes(self._pending[4:])
                self._pending.clear()
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            log.warning("client %s (clientId %s): %s; closing the socket",
                        self.peer, self.client_id, exc)
            self.abort()
            return
        for fields in messages:
            if self.closed:
                return
            try:
                self._on_message(fields)
            except Exception:  # a bug must cost this client its socket, never the server
                log.exception("client %s (clientId %s): failed on %r; closing the socket",
                              self.peer, self.client_id, fields[:6])
                self.abort()
                return

    # -- sending -----------------------------------------------------------
    def send(self, *fields: object) -> None:
        """Frame one message and write it (dropped silently once the socket is closed)."""
        if self.transport is not None and not self.closed:
            self.transport.write(frame(fields))

    def write_raw(self, data: bytes) -> None:
        """Write pre-framed bytes (the streaming engine's batches)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_error(self, req_id: int, code: int, message: str) -> None:
        """error (4) at sv 176: six fields, the last is advancedOrderRejectJson."""
        self.send(4, 2, req_id, code, message, "")

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

    # -- receiving ---------------------------------------------------------
    def _on_message(self, fields: list[str]) -> None:
        if not self._version_done:
            self._on_version(fields)
            return
        try:
            msg_id = int(fields[0]) if fields else -1
        except ValueError:
            msg_id = -1
        if msg_id < 0:
            log.warning("client %s: message with no numeric id %r; ignoring", self.peer,
                        fields[:3])
            self.send_error(-1, 320, f"Error reading request. Message id {fields[:1]!r} "
                                     "is not a number")
            return
        self.gateway.request_counts[msg_id] += 1
        if msg_id == 71:
            self._on_start_api(fields)
            return
        if not self.started:
            log.warning("client %s sent message %d before START_API", self.peer, msg_id)
            self.send_error(self._req_id(msg_id, fields), 321,
                            f"Error validating request.-'{msg_id}' : cause - "
                            "API client not started: send START_API (71) first")
            return
        if not self._take_token():
            rate = self.gateway.config.max_msg_rate
            log.info("client %d exceeded %.0f msgs/s; dropping message %d",
                     self.client_id, rate, msg_id)
            self.send_error(self._req_id(msg_id, fields), 100,
                            "Max rate of messages per second has been exceeded:"
                            f"max={rate:g} rec={self._in_second} (1)")
            return
        handler = self.gateway.handlers.get(msg_id)
        if handler is None:
            self._unsupported(msg_id, fields)
            return
        try:
            handler(self, fields)
        except RequestError as exc:
            self.send_error(self._req_id(msg_id, fields), exc.code, exc.message)
        except (ValueError, IndexError) as exc:
            log.warning("client %d: bad message %d %r: %s", self.client_id, msg_id,
                        fields[:6], exc)
            self.send_error(self._req_id(msg_id, fields), 321,
                            f"Error validating request.-'{msg_id}' : cause - {exc}")
        except Exception:
            log.exception("client %d: handler for message %d failed on %r",
                          self.client_id, msg_id, fields[:6])
            self.send_error(self._req_id(msg_id, fields), 321,
                            f"Error validating request.-'{msg_id}' : cause - "
                            "internal simulator error (see its log)")

    def _req_id(self, msg_id: int, fields: list[str]) -> int:
        idx = REQ_ID_INDEX.get(msg_id)
        if idx is None or idx >= len(fields):
            return -1
        try:
            return int(fields[idx])
        except ValueError:
            return -1

    def _unsupported(self, msg_id: int, fields: list[str]) -> None:
        req_id = self._req_id(msg_id, fields)
        known = msg_id in REQ_ID_INDEX or msg_id in _KNOWN_WITHOUT_ID
        log.warning("client %d: %s message id %d; answering with an error", self.client_id,
                    "unsupported" if known else "unknown", msg_id)
        if known:
            self.send_error(req_id, 321, f"Error validating request.-'{msg_id}' : cause - "
                                         "this request is not supported by the ibhub simulator")
        else:
            self.send_error(-1, 320, f"Error reading request. Unknown message id {msg_id}")

    def _take_token(self) -> bool:
        """Token bucket: ``max_msg_rate`` per second with a one-second burst."""
        rate = self.gateway.config.max_msg_rate
        now = time.monotonic()
        second = int(now)
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        self._tokens = min(rate, self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _on_version(self, fields: list[str]) -> None:
        text = fields[0] if fields else ""
        versions = parse_version_range(text)
        sv = self.server_version
        if versions is None:
            log.warning("client %s: bad version string %r; closing", self.peer, text)
            self.abort()
            return
        lo, hi = versions
        if not lo <= sv <= hi:
            log.warning("client %s: version range %d..%d does not contain %d; closing",
                        self.peer, lo, hi, sv)
            self.abort()
            return
        self._version_done = True
        now = time.strftime("%Y%m%d %H:%M:%S", time.gmtime())
        self.send(sv, f"{now} Greenwich Mean Time")

    def _on_start_api(self, fields: list[str]) -> None:
        if self.started:
            log.warning("client %d sent START_API twice; ignoring", self.client_id)
            return
        try:
            client_id = int(fields[2])
        except (IndexError, ValueError):
            log.warning("client %s: bad START_API %r; closing", self.peer, fields)
            self.send_error(-1, 320, "Error reading request. START_API needs an integer "
                                     "client id")
            self.close()
            return
        gw = self.gateway
        if gw.client_id_in_use(client_id):
            log.info("client %s: clientId %d already in use; sending 326 and closing",
                     self.peer, client_id)
            self.send_error(-1, 326, "Unable to connect as the client id is already in use. "
                                     "Retry with a unique client id.")
            self.close()
            return
        self.client_id = client_id
        self.started = True
        gw._session_started(self)
        self.send(9, 1, gw.broker.next_order_id(client_id))
        self.send(15, 1, ",".join(gw.config.accounts))
        for code, text in gw.farm_status_messages():
            self.send_error(-1, code, text)


_KNOWN_WITHOUT_ID = frozenset(
    {5, 6, 8, 12, 13, 14, 15, 16, 17, 18, 24, 49, 58, 59, 61, 64, 65, 66, 71, 72, 73, 80,
     82, 85, 91, 99}
)
