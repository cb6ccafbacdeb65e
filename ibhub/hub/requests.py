"""ROUTER side: decode once, validate, dispatch by type, reply with the request's id.

One ROUTER socket serves REQ and DEALER clients alike: the envelope (identity
frames up to the empty delimiter) is echoed verbatim in front of the reply. Every
failure becomes a typed :class:`~ibhub.protocol.Error` naming the problem:

* more frames than any client sends, or a missing payload -> ``bad_request``
* a payload above the size limit (``max_request_bytes``, default
  ``wire.MAX_REQUEST_BYTES``) -> ``too_large`` (not decoded at all)
* a payload nested too deep for the decoder (msgpack maps/arrays inside each other a
  thousand times: Python's recursion limit) -> ``too_deep``
* not msgpack, unknown ``type``, wrong or missing fields -> ``bad_request`` with
  msgspec's message, which names the field (e.g. "Expected `int`, got `str` - at `$.id`")
* a text field with a control character (NUL, CR, LF, TAB, DEL, C1) or longer than its
  kind allows (``protocol.TEXT_PATTERN`` / ``MAX_*``) -> ``bad_request`` naming the
  field ("`$.contract.symbol` contains a control character ...")
* values that type-check but make no sense (empty name, unknown role/kind, a
  contract with neither symbol nor conId, negative ttl) -> ``bad_request``
* a handler that raises -> ``internal`` (logged with its traceback)

* a type no module registered -> ``bad_request``; a lease or role the type needs and
  the request lacks -> ``unknown_lease`` / ``forbidden`` (:mod:`ibhub.hub.registry`)

The loop never exits on bad input. Each decoded request is looked up in the one
registry (:class:`~ibhub.hub.registry.Registry`: type -> handler, with its flags).
Cheap requests (heartbeat, status, snapshot, ...) are answered inline; requests that
wait on the Gateway (subscribe, contract details, historical bars, orders) run as
tasks, so a slow historical request never delays a heartbeat. Replies to DEALER
clients may therefore come out of order; the id says which request each answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.hub.leases import Peer
from ibhub.hub.registry import Context, Handler, Registry
from ibhub.hub.subscriptions import KINDS, valid_kind
from ibhub.protocol import (
    MAX_NAME,
    CalculateImpliedVolatility,
    CalculateOptionPrice,
    ContractSpec,
    Error,
    ErrorCode,
    GetContractDetails,
    GetHistoricalBars,
    GetOptionChain,
    Hello,
    LeaseClientId,
    ReleaseClientId,
    Reply,
    Request,
    Subscribe,
    Unsubscribe,
)
from ibhub.tasks import TaskSet

log = logging.getLogger(__name__)

ROLES = ("trader", "readonly", "operator")
MAX_TASKS = 1024  # concurrent slow requests; more are refused rather than queued unboundedly
DRAIN_BATCH = 256  # requests handled per loop turn before the loop's other work runs


class BadRequest(Exception):
    """A request that decoded but cannot be served as given."""

    def __init__(self, message: str, code: str = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


def _check_contract(spec: ContractSpec, where: str) -> None:
    if spec.con_id < 0:
        raise BadRequest(f"{where}.con_id must be >= 0, got {spec.con_id}")
    if not spec.con_id and not spec.symbol:
        raise BadRequest(f"{where} needs a symbol or a con_id")


def _check_name(name: str, where: str) -> None:
    if not name.strip():
        raise BadRequest(f"{where} must not be empty")
    if len(name) > MAX_NAME:
        raise BadRequest(f"{where} is longer than {MAX_NAME} characters")


def validate(req: Request) -> None:
    """Semantic checks the types cannot express; raises :class:`BadRequest`."""
    match req:
        case Hello(name=name, role=role):
            _check_name(name, "name")
            if role not in ROLES:
                raise BadRequest(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        case Subscribe(contract=contract, kind=kind):
            if not valid_kind(kind):
                raise BadRequest(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
            _check_contract(contract, "contract")
        case Unsubscribe(topic=topic):
            if not topic:
                raise BadRequest("topic must not be empty")
        case GetContractDetails(contract=contract) | GetHistoricalBars(contract=contract):
            _check_contract(contract, "contract")
        # options and instrument data (ibhub.hub.option_requests checks the numbers)
        case GetOptionChain(underlying=contract):
            _check_contract(contract, "underlying")
        case CalculateImpliedVolatility(contract=contract) | CalculateOptionPrice(
            contract=contract
        ):
            _check_contract(contract, "contract")
        case LeaseClientId(name=name, ttl=ttl):
            _check_name(name, "name")
            if ttl < 0 or ttl != ttl:
                raise BadRequest(f"ttl must be >= 0 seconds, got {ttl}")
        case ReleaseClientId(client_id=cid):
            if cid < 0:
                raise BadRequest(f"client_id must be >= 0, got {cid}")
        case _:
            pass


_PATTERN_ERROR = re.compile(r"^Expected `str` matching regex '.*' - at `(?P<path>[^`]*)`$", re.S)
_LENGTH_ERROR = re.compile(r"^Expected `(?P<what>str|array)` of length <= (?P<n>\d+) - at "
                           r"`(?P<path>[^`]*)`$")


def describe_invalid(exc: msgspec.ValidationError) -> str:
    """msgspec's message, with the text-field rules said in words (the regex is
    unreadable): "`$.account` contains a control character ...", "`$.contract.symbol`
    is longer than 64 characters"."""
    text = str(exc)
    m = _PATTERN_ERROR.match(text)
    if m is not None:
        return (
            f"`{m['path']}` contains a control character (NUL, CR, LF, TAB, DEL or a C1 "
            "control); text fields must be printable: NUL separates fields on the TWS wire"
        )
    m = _LENGTH_ERROR.match(text)
    if m is not None:
        unit = "characters" if m["what"] == "str" else "entries"
        return f"`{m['path']}` is longer than {m['n']} {unit}"
    return text


def decode(payload: bytes, max_bytes: int = wire.MAX_REQUEST_BYTES) -> Request:
    """Payload -> validated request; raises :class:`BadRequest` naming the problem.

    Depth: msgspec enters Python's recursion guard for every nested map or array, so
    a payload nested deep enough raises ``RecursionError`` cleanly (no C stack
    overflow); that becomes ``too_deep``. How deep is "enough" depends on the Python
    (~1,000 on 3.11; 3.12+ guards C recursion separately, 10,000 on 3.13), so the hub
    sets its own bound, :data:`MAX_NESTING`, the same on every Python: a payload with
    fewer bytes that could open a map or an array than that (one C-level count, no
    Python loop) cannot nest deeper; only others are walked (:func:`_nesting`). No
    real request nests deeper than 3.
    """
    if len(payload) > max_bytes:
        raise BadRequest(
            f"request of {len(payload)} bytes exceeds the limit of {max_bytes} bytes "
            "(max_request_bytes)",
            ErrorCode.TOO_LARGE,
        )
    if (
        len(payload) - len(payload.translate(None, _CONTAINER_BYTES)) > MAX_NESTING
        and _nesting(payload) > MAX_NESTING
    ):
        raise BadRequest(_TOO_DEEP, ErrorCode.TOO_DEEP)
    try:
        req = wire.decode_request(payload)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {describe_invalid(exc)}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request is not valid msgpack: {exc}") from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP, ErrorCode.TOO_DEEP) from None
    validate(req)
    return req


#: Maps or arrays inside each other a request may have (real ones: 3); deeper is
#: ``too_deep`` on every Python, below where any Python's recursion guard trips.
MAX_NESTING = 256
_TOO_DEEP = (
    f"request is nested too deeply to decode (maps or arrays inside each other more than "
    f"{MAX_NESTING} times); no request nests more than a few levels"
)
# msgpack bytes that can open a map or an array (fixmap, fixarray, array16/32, map16/32)
_CONTAINER_BYTES = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])


def _nesting(payload: bytes) -> int:
    """How deep maps and arrays nest in ``payload`` (walked with a stack of counts, any
    depth); 0 for a scalar, MAX_NESTING + 1 as soon as it is deeper, and 0 for bytes
    that are not msgpack (the decoder names that problem)."""
    stack: list[int] = []  # items still to read in each open container
    pos, deepest = 0, 0
    try:
        while True:
            b = payload[pos]
            if 0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF:
                if 0x80 <= b <= 0x8F:
                    items, pos = 2 * (b & 0x0F), pos + 1
                elif b <= 0x9F:
                    items, pos = b & 0x0F, pos + 1
                else:
                    n, per = _CONTAINERS[b]
                    items = per * int.from_bytes(payload[pos + 1:pos + 1 + n], "big")
                    pos += 1 + n
                if items:
                    stack.append(items)
                    deepest = max(deepest, len(stack))
                    if deepest > MAX_NESTING:
                        return deepest
                    continue
            else:
                pos = _skip(payload, pos)
            while stack:
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
            if not stack:
                return deepest
    except (IndexError, ValueError):
        return deepest


def request_id(payload: bytes) -> int:
    """The id to answer a refused payload with (0 when it cannot be read)."""
    try:
        return wire.request_id_of(payload)
    except RecursionError:  # too deep for the decoder: walk the top level without it
        return _shallow_id(payload)


# msgpack first bytes -> (fixed bytes that follow, bytes of a length prefix, items)
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin / str: length bytes
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # length bytes, then a type byte, then the data
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (len bytes, x)


def _skip(data: bytes, pos: int) -> int:
    """Position after the msgpack value at ``pos``, nested values included, walked with
    a counter instead of recursion (any depth). Raises ``IndexError`` / ``ValueError``
    on truncated or invalid bytes."""
    pending = 1
    while pending:
        pending -= 1
        b = data[pos]
        pos += 1
        if b <= 0x7F or b >= 0xE0:  # positive / negative fixint
            continue
        if 0x80 <= b <= 0x8F:
            pending += 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            pending += b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED:
            n = _SIZED[b]
            pos += n + int.from_bytes(data[pos:pos + n], "big")
        elif b in _EXT:
            n = _EXT[b]
            pos += n + 1 + int.from_bytes(data[pos:pos + n], "big")
        elif b in _CONTAINERS:
            n, per = _CONTAINERS[b]
            pending += per * int.from_bytes(data[pos:pos + n], "big")
            pos += n
        else:
            raise ValueError(f"invalid msgpack byte 0x{b:02x}")
        if pos > len(data):
            raise IndexError("truncated")
    return pos


def _shallow_id(payload: bytes) -> int:
    """The top-level ``id`` of a map too deep for the decoder, else 0."""
    try:
        b = payload[0]
        if 0x80 <= b <= 0x8F:
            count, pos = b & 0x0F, 1
        elif b in (0xDE, 0xDF):
            n = 2 if b == 0xDE else 4
            count, pos = int.from_bytes(payload[1:1 + n], "big"), 1 + n
        else:
            return 0
        for _ in range(count):
            end = _skip(payload, pos)
            key = payload[pos:end]
            pos, start = _skip(payload, end), end
            if key == b"\xa2id":
                value = msgspec.msgpack.decode(payload[start:pos])
                return value if type(value) is int else 0
    except (IndexError, ValueError, msgspec.DecodeError):
        return 0
    return 0


def check_fields(req: msgspec.Struct) -> None:
    """Apply the decode-time field rules (text patterns, lengths) to a request built
    in-process (the TWS front door builds them from a script's fields, which never
    pass through :func:`decode`); raises :class:`BadRequest` naming the field."""
    try:
        msgspec.convert(msgspec.to_builtins(req), type(req), strict=True)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {describe_invalid(exc)}") from None


class RpcServer:
    """Serves requests from one ROUTER socket until cancelled.

    The socket is driven from the loop without ``zmq.asyncio`` (by ``wire.EdgeReader``):
    its ZMQ FD is watched with ``loop.add_reader`` and every wake-up drains the socket
    with NOBLOCK receives until ``zmq.Again``. Replies go out with the plain socket's
    NOBLOCK send. Per request this saves the awaited receive and send of
    ``zmq.asyncio`` (a future and a loop round trip each) and, for inline requests, a
    task (the order ack's latency).

    The ZMQ FD is edge-triggered: it signals that the socket's state *changed*, and
    any operation on the socket (a send included) may consume that signal while a
    request is waiting. So a drain always reads until ``zmq.Again``, and a reply sent
    outside a drain (by a request that ran as a task) checks ``EVENTS`` and schedules
    a drain when a request is waiting (``EdgeReader.after_send``).
    """

    def __init__(
        self,
        socket: zmq.Socket[Any],
        registry: Registry | None = None,
        *,
        peer_keys: bool = False,
        max_request_bytes: int = wire.MAX_REQUEST_BYTES,
    ) -> None:
        self.socket = socket
        self.max_request_bytes = max_request_bytes
        # With CURVE, each request's authenticated client key (ZAP User-Id) is read
        # from its frame metadata as it is received (_peer_key, for _handle).
        self._peer_key = ""
        self._reader = wire.EdgeReader(
            socket, self._handle_guarded, batch=DRAIN_BATCH, name="request socket",
            receive=self._keyed_receiver(socket) if peer_keys else None,
            failure_level=logging.WARNING,
        )
        self._sock = self._reader.plain  # a plain view of the same socket, for replies
        # request type -> handler and what it needs (ibhub.hub.registry)
        self.registry = registry if registry is not None else Registry()
        self._tasks = TaskSet(log)
        self.requests = 0
        self.errors = 0
        self.dropped = 0  # replies ZeroMQ could not take (peer gone, or not reading)
        # Called with (request type tag, reply, seconds from receipt to reply) for every
        # decoded request (metrics, alerts); an observer that raises is logged and skipped.
        self.observers: list[Callable[[str, Reply, float], None]] = []

    def register(self, req_type: type[Request], fn: Handler, *, slow: bool = True,
                 lease: bool = False, role: str = "", action: str = "",
                 eager: bool = False) -> None:
        """Serve ``req_type`` with ``fn(req, ctx)`` (:meth:`Registry.add`): a Reply
        (``slow=False``, answered inline) or an awaitable of one (``slow=True``, run as a
        task; ``eager``: its first step inside the receive call). It may raise
        :class:`BadRequest`."""
        self.registry.add(req_type, fn, slow=slow, lease=lease, role=role, action=action,
                          eager=eager)

    def _keyed_receiver(self, socket: zmq.Socket[Any]) -> Callable[[], list[bytes]]:
        """Like :func:`wire.fast_receiver`, also noting the message's ``User-Id`` (the
        Z85 client key the ZAP handler authenticated) in ``_peer_key``."""
        recv = zmq.backend.Socket.recv.__get__(zmq.Socket.shadow(socket.underlying))
        noblock = int(zmq.NOBLOCK)

        def receive() -> list[bytes]:
            frame = recv(noblock, False)
            frames = [frame.bytes]
            while frame.more:
                frame = recv(noblock, False)
                frames.append(frame.bytes)
            try:
                self._peer_key = str(frame.get("User-Id"))
            except zmq.ZMQError:  # no metadata: not a CURVE peer
                self._peer_key = ""
            return frames

        return receive

    async def serve(self) -> None:
        """Watch the socket until cancelled."""
        self._reader.start()
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            await self._reader.stop()

    async def close(self) -> None:
        await self._tasks.close()

    def _handle_guarded(self, frames: list[bytes]) -> None:
        try:
            self._handle(frames)
        except Exception:  # a bug must cost one request, never the request loop
            log.exception("request loop: unexpected error handling %d frame(s)", len(frames))

    def _handle(self, frames: list[bytes]) -> None:
        try:
            envelope, payload = wire.split_envelope(frames)
        except ValueError as exc:
            self.requests += 1
            # Answer the identity the ROUTER gave us; a client that sent this much
            # garbage is a DEALER, so the delimiter is ours to add.
            self._send([frames[0], b""], Error(id=0, code=ErrorCode.BAD_REQUEST,
                                               message=f"malformed request: {exc}"))
            self.errors += 1
            return
        self.serve_payload(payload, Peer(b"\0".join(envelope), self._peer_key),
                           functools.partial(self._send, envelope))

    def serve_payload(self, payload: bytes, peer: Peer, send: Callable[[Reply], None]) -> None:
        """Decode, validate, admit and dispatch one request from any transport; its reply
        (or the Error naming the problem) goes to ``send``. The ROUTER socket and the NATS
        bridge (:mod:`ibhub.hub.nats_bridge`, ``ibhub.<hub>.rpc.<user>``) both come here,
        so leases, roles, ownership, idempotency, risk and the live guard are one code."""
        self.requests += 1
        try:
            req = decode(payload, self.max_request_bytes)
        except BadRequest as exc:
            self.errors += 1
            rid = request_id(payload) if exc.code != ErrorCode.TOO_LARGE else 0
            send(Error(id=rid, code=exc.code, message=str(exc)))
            return
        admitted = self.registry.admit(req, peer)
        if isinstance(admitted, Error):  # counted like any other error reply
            self._observe(req, admitted, time.perf_counter())
            send(admitted)
            return
        route, req, ctx = admitted
        if route.slow:
            self._spawn(send, req, ctx, route.fn, route.eager)  # type: ignore[arg-type]
        else:
            self._answer(send, req, ctx, route.fn)  # type: ignore[arg-type]

    def _answer(self, send: Callable[[Reply], None], req: Request, ctx: Context,
                fn: Callable[..., Reply]) -> None:
        t0 = time.perf_counter()
        try:
            reply = fn(req, ctx)
        except Exception as exc:
            reply = self._failed(req, exc)
        send(reply)  # the reply first, the observers (metrics, alerts) after it
        self._observe(req, reply, t0)

    @staticmethod
    def _failed(req: Request, exc: Exception) -> Error:
        """The reply to a handler that raised (called inside its ``except``): a
        ``BadRequest`` names the problem; anything else is logged and answered as
        internal."""
        if isinstance(exc, BadRequest):
            return Error(id=req.id, code=exc.code, message=str(exc))
        log.exception("handling %s failed", type(req).__name__)
        return Error(id=req.id, code=ErrorCode.INTERNAL,
                     message=f"internal error handling {type(req).__name__}; see hub log")

    def _observe(self, req: Request, reply: Reply, t0: float) -> None:
        if not self.observers:
            return
        seconds = time.perf_counter() - t0
        tag = str(type(req).__struct_config__.tag)
        for observer in self.observers:
            try:
                observer(tag, reply, seconds)
            except Exception:
                log.exception("request observer %r failed", observer)

    def _spawn(self, send: Callable[[Reply], None], req: Request, ctx: Context,
               fn: Callable[..., Awaitable[Reply]], eager: bool = False) -> None:
        if len(self._tasks) >= MAX_TASKS:
            send(Error(
                id=req.id, code=ErrorCode.BUSY,
                message=f"hub busy: {MAX_TASKS} requests in progress; retry later"))
            return
        self._tasks.spawn(self._run(send, req, ctx, fn), eager=eager)

    async def _run(self, send: Callable[[Reply], None], req: Request, ctx: Context,
                   fn: Callable[..., Awaitable[Reply]]) -> None:
        t0 = time.perf_counter()
        try:
            reply = await fn(req, ctx)
        except Exception as exc:
            reply = self._failed(req, exc)
        send(reply)  # the reply first, the observers (metrics, alerts) after it
        for after in self.registry.after_reply:
            try:
                after()
            except Exception:  # one hook's bug must not cost the others or the loop
                log.exception("after-reply hook %r failed", after)
        self._observe(req, reply, t0)

    def _send(self, envelope: list[bytes], reply: Reply) -> None:
        """Send without waiting: a client that stopped reading its replies must not
        stall the loop that serves everyone else. The socket is ROUTER_MANDATORY, so a
        reply ZeroMQ cannot take (that peer's queue is full, or it is gone) raises here
        and is counted and logged instead of vanishing silently."""
        sock = self._sock
        try:
            sock.send_multipart([*envelope, wire.encode(reply)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8, ...: no log flood
                why = ("its reply queue is full (it is not reading replies)"
                       if exc.errno == zmq.EAGAIN else f"{exc}")
                log.warning("reply to request %d dropped: %s; %d replies dropped so far",
                            reply.id, why, self.dropped)
        # Sending processes the socket's pending commands, which can consume the FD's
        # edge while a request is queued (a reply sent inside a drain needs nothing).
        self._reader.after_send()
