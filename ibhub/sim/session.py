"""One client's TCP connection to the simulated Gateway.

:class:`ClientSession` is a :class:`~ibhub.tws.server_session.TwsServerSession`
(hello, version handshake, framing, sending: shared with the hub's front door) that
adds what the simulated Gateway does per connection: START_API with its client-id
check, the gateway's dispatch table (message id -> handler), pacing (error 100,
message dropped), bad-input replies, and two faults: a stalled handshake reads and
never answers, and a held client id is refused with 326.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from ibhub.tws.server_session import (
    KNOWN_WITHOUT_ID,
    REQ_ID_INDEX,
    RequestError,
    TwsServerSession,
    req_id_of,
)

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["REQ_ID_INDEX", "ClientSession", "Handler", "RequestError"]

log = logging.getLogger(__name__)

Handler = Callable[["ClientSession", list[str]], None]

PACED_MAX = 10_000  # requests a +PACEAPI client may have waiting before it is cut off


class ClientSession(TwsServerSession):
    """State of one API client connection (see module docstring)."""

    _log = log
    _internal_error: ClassVar[tuple[int, str]] = (
        321, "Error validating request.-'{msg_id}' : cause - internal simulator error "
             "(see its log)")

    def __init__(self, gateway: SimGateway) -> None:
        super().__init__(gateway.config.server_version, gateway.config.max_frame)
        self.gateway = gateway
        self.market_data_type = 1
        self._stalled = False
        rate = gateway.config.max_msg_rate
        self._tokens = rate
        self._last_refill = time.monotonic()
        self._second = 0  # for the "rec=N" count in error 100
        self._in_second = 0
        # "+PACEAPI" in the hello: over the rate, requests wait their turn (in order)
        # instead of being dropped with error 100, as a Gateway does for such clients
        self.pace_api = False
        self.refusal = ""  # over max_clients: the handshake, then refuse_connection
        self._paced: collections.deque[list[str]] = collections.deque()
        self._drain: asyncio.TimerHandle | None = None

    def write_raw(self, data: bytes) -> None:
        """The streaming engine's way in to :meth:`write` (a hook for benchmarks)."""
        self.write(data)

    # -- TwsServerSession hooks --------------------------------------------
    def _opened(self) -> None:
        self._stalled = self.gateway.handshakes_stalled
        self.gateway._session_opened(self)

    def data_received(self, data: bytes) -> None:
        if self._stalled:
            return  # a stalled handshake reads and never answers, like a hidden dialog
        super().data_received(data)

    def _on_version(self, fields: list[str]) -> None:
        self.pace_api = bool(fields) and "+PACEAPI" in fields[0].split()
        super()._on_version(fields)

    def _on_messages(self, messages: list[list[str]]) -> None:
        if self.refusal:
            if messages:
                self._message_id(messages[0])  # the version handshake (or a close)
                if not self.closed:
                    self.refuse_connection(502, self.refusal, self.gateway.config.accounts)
            return
        for fields in messages:
            if self.closed:
                return
            paced = self.pace_api and self._version_done and self.started
            if paced and (self._paced or not self._take_token()):
                self._pace(fields)
                continue
            self._serve(fields, token_taken=paced)

    def _serve(self, fields: list[str], token_taken: bool = False) -> None:
        try:
            self._on_message(fields, token_taken)
        except Exception:  # a bug must cost this client its socket, never the server
            log.exception("client %s (clientId %s): failed on %r; closing the socket",
                          self.peer, self.client_id, fields[:6])
            self.abort()

    def _pace(self, fields: list[str]) -> None:
        """Hold a paced client's request until the rate allows it (order kept)."""
        if len(self._paced) >= PACED_MAX:
            log.warning("client %d: %d paced requests waiting; closing", self.client_id,
                        len(self._paced))
            self.abort()
            return
        self._paced.append(fields)
        if self._drain is None:
            rate = self.gateway.config.max_msg_rate
            self._drain = asyncio.get_running_loop().call_later(1.0 / rate, self._drain_paced)

    def _drain_paced(self) -> None:
        self._drain = None
        while self._paced and not self.closed and self._take_token():
            self._serve(self._paced.popleft(), token_taken=True)
        if self._paced and not self.closed:
            rate = self.gateway.config.max_msg_rate
            self._drain = asyncio.get_running_loop().call_later(1.0 / rate, self._drain_paced)

    def _gone(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        self._paced.clear()
        self.gateway._session_closed(self)

    # -- receiving ---------------------------------------------------------
    def _on_message(self, fields: list[str], token_taken: bool = False) -> None:
        msg_id = self._message_id(fields)
        if msg_id is None:
            return
        self.gateway.request_counts[msg_id] += 1
        if msg_id == 71:
            self._on_start_api(fields)
            return
        if not self._check_started(msg_id, fields):
            return
        if not token_taken and not self._take_token():
            rate = self.gateway.config.max_msg_rate
            log.info("client %d exceeded %.0f msgs/s; dropping message %d",
                     self.client_id, rate, msg_id)
            self.send_error(req_id_of(msg_id, fields), 100,
                            "Max rate of messages per second has been exceeded:"
                            f"max={rate:g} rec={self._in_second} (1)")
            return
        handler = self.gateway.handlers.get(msg_id)
        if handler is None:
            self._unsupported(msg_id, fields)
            return
        try:
            handler(self, fields)
        except Exception as exc:
            self._answer_failure(msg_id, fields, exc)

    def _unsupported(self, msg_id: int, fields: list[str]) -> None:
        known = msg_id in REQ_ID_INDEX or msg_id in KNOWN_WITHOUT_ID
        log.warning("client %d: %s message id %d; answering with an error", self.client_id,
                    "unsupported" if known else "unknown", msg_id)
        if known:  # 320, not 321: ib_async treats 321 as a warning and would wait forever
            self.send_error(req_id_of(msg_id, fields), 320,
                            f"Error reading request.-'{msg_id}' : cause - this request is not "
                            "supported by the ibhub simulator")
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
            self.refuse_client_id()
            return
        self.client_id = client_id
        self.started = True
        gw._session_started(self)
        self.welcome(gw.broker.next_order_id(client_id), gw.config.accounts,
                     gw.farm_status_messages())
