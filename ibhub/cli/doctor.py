"""``ibhub doctor``: stage-by-stage diagnosis of a TWS/Gateway API port and of a hub.

Why a raw handshake instead of ``ib_insync.IB.connect``: ib_insync reports every
failure the same way (``TimeoutError`` after the full timeout, even for a 326), so
it cannot tell "nothing listening" from "API socket disabled" from "client id in
use". Here each stage has its own timeout and its own verdict:

1. TCP connect              refused -> NOT_LISTENING; timeout/no route -> UNREACHABLE
2. ``API\\0`` + version range  no answer -> HANDSHAKE_STALLED; closed/garbage/old -> REFUSED
3. START_API with a client id  326 -> CLIENT_ID_IN_USE; silence -> START_STALLED
4. nextValidId + managedAccounts arrive -> HEALTHY (farm notices collected a moment longer)

The probe uses a high client id (9999 by default) so it never takes the id a real
script is about to connect with, and it sends nothing after START_API: no
subscriptions, no orders.

Each diagnosis has a distinct, documented process exit code so the command can
gate a trading start-up; see ``EXIT_CODES`` and docs/operations.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Final

from ibhub.tws import ib_codes
from ibhub.tws.codec import FrameReader, ProtocolError, frame, pack_len

log = logging.getLogger(__name__)

MIN_CLIENT_VERSION: Final = 157
MAX_CLIENT_VERSION: Final = 176
MAX_FRAME: Final = 16 << 20  # a length prefix above this is not TWS talking
# High and outside the hub's default raw-id range (1-999), so the probe neither
# collides with a script's id nor is mistaken for one of the hub's leases.
PROBE_CLIENT_ID: Final = 9999


class Diagnosis(StrEnum):
    HEALTHY = "healthy"
    NOT_LISTENING = "not_listening"
    HANDSHAKE_STALLED = "handshake_stalled"
    CLIENT_ID_IN_USE = "client_id_in_use"
    HANDSHAKE_REFUSED = "handshake_refused"
    START_STALLED = "start_stalled"
    UNREACHABLE = "unreachable"
    HUB_HEALTHY = "hub_healthy"
    HUB_NOT_ANSWERING = "hub_not_answering"
    HUB_UPSTREAM_DOWN = "hub_upstream_down"
    HUB_REFUSED = "hub_refused"


EXIT_CODES: Final[dict[Diagnosis, int]] = {
    Diagnosis.HEALTHY: 0,
    Diagnosis.HUB_HEALTHY: 0,
    Diagnosis.NOT_LISTENING: 10,
    Diagnosis.HANDSHAKE_STALLED: 11,
    Diagnosis.CLIENT_ID_IN_USE: 12,
    Diagnosis.HANDSHAKE_REFUSED: 13,
    Diagnosis.START_STALLED: 14,
    Diagnosis.UNREACHABLE: 15,
    Diagnosis.HUB_NOT_ANSWERING: 20,
    Diagnosis.HUB_UPSTREAM_DOWN: 21,
    Diagnosis.HUB_REFUSED: 22,
}

# When no port is healthy, the one whose failure says the most wins: a port that got
# as far as asking for a client id tells more than a port with nothing on it.
_INFORMATIVENESS: Final = [
    Diagnosis.CLIENT_ID_IN_USE,
    Diagnosis.START_STALLED,
    Diagnosis.HANDSHAKE_REFUSED,
    Diagnosis.HANDSHAKE_STALLED,
    Diagnosis.UNREACHABLE,
    Diagnosis.NOT_LISTENING,
]


@dataclass(frozen=True)
class StandardPort:
    port: int
    product: str  # "TWS" or "IB Gateway"
    mode: str  # "paper" or "live"


STANDARD_PORTS: Final = (
    StandardPort(7497, "TWS", "paper"),
    StandardPort(7496, "TWS", "live"),
    StandardPort(4002, "IB Gateway", "paper"),
    StandardPort(4001, "IB Gateway", "live"),
)
_BY_PORT: Final = {p.port: p for p in STANDARD_PORTS}

API_SETTINGS_HINT: Final = (
    "In TWS: File/Edit > Global Configuration > API > Settings (Gateway: Configure > "
    "Settings > API > Settings): tick 'Enable ActiveX and Socket Clients', check "
    "'Socket port', and add this machine's address to 'Trusted IPs' or tick "
    "'Allow connections from localhost only' when connecting from 127.0.0.1."
)
DIALOG_HINT: Final = (
    "An 'Accept incoming connection attempt?' dialog may be waiting in TWS/Gateway, "
    "possibly hidden behind other windows (or on a headless display): accept it, "
    "and add the address to Trusted IPs so it does not ask again."
)


@dataclass
class IbMessage:
    code: int
    message: str
    category: str


@dataclass
class PortReport:
    host: str
    port: int
    client_id: int
    diagnosis: Diagnosis
    detail: str
    hints: list[str] = field(default_factory=list)
    product: str = ""
    expected_mode: str = ""  # from the port convention
    server_version: int | None = None
    connection_time: str = ""
    accounts: list[str] = field(default_factory=list)
    mode: str = ""  # "paper" / "live" from the accounts, "" if unknown
    next_order_id: int | None = None
    messages: list[IbMessage] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.diagnosis]

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["diagnosis"] = str(self.diagnosis)
        d["exit_code"] = self.exit_code
        return d


@dataclass
class HubReport:
    endpoint: str
    diagnosis: Diagnosis
    detail: str
    hints: list[str] = field(default_factory=list)
    status: dict[str, object] | None = None
    elapsed_ms: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.diagnosis]

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["diagnosis"] = str(self.diagnosis)
        d["exit_code"] = self.exit_code
        return d


# --------------------------------------------------------------------------- framing


def hello_bytes() -> bytes:
    """The unframed ``API\\0`` prefix plus the framed supported-version range."""
    text = f"v{MIN_CLIENT_VERSION}..{MAX_CLIENT_VERSION}".encode()
    return b"API\0" + pack_len(len(text)) + text


class _NotTws(Exception):
    """The peer sent bytes that cannot be the TWS API protocol."""


class _Messages:
    """The peer's messages one at a time, framed by :mod:`ibhub.tws.codec` (the hub's
    own framing: a prefix above ``MAX_FRAME`` or of 0 is not TWS talking)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._frames = FrameReader(MAX_FRAME)
        self._ready: deque[list[str]] = deque()

    async def next(self) -> list[str]:
        """The next message as text fields; ``ConnectionError`` once the peer closes."""
        while not self._ready:
            data = await self._reader.read(1 << 16)
            if not data:
                held = self._frames.buffered
                raise ConnectionError(
                    f"closed after {held} byte(s) of a message" if held else "closed by peer"
                )
            try:
                self._ready.extend(self._frames.feed(data))
            except ProtocolError as exc:
                raise _NotTws(f"{exc} (first bytes {data[:8]!r})") from None
        return self._ready.popleft()


def _mode_of_accounts(accounts: list[str]) -> str:
    """Paper accounts start with D (DU individual, DF advisor); live ones do not."""
    if not accounts:
        return ""
    return "paper" if all(a.upper().startswith("D") for a in accounts) else "live"


# --------------------------------------------------------------------------- gateway probe


async def probe_gateway(
    host: str,
    port: int,
    *,
    client_id: int = PROBE_CLIENT_ID,
    timeout: float = 3.0,
    settle: float = 0.3,
) -> PortReport:
    """Diagnose one TWS/Gateway API port. Never raises for a network outcome.

    ``timeout`` bounds each stage (TCP, handshake, START_API) separately;
    ``settle`` is how long to keep listening for farm notices after the connection
    is ready (TWS sends them right after managedAccounts).
    """
    std = _BY_PORT.get(port)
    report = PortReport(
        host=host,
        port=port,
        client_id=client_id,
        diagnosis=Diagnosis.UNREACHABLE,
        detail="",
        product=std.product if std else "",
        expected_mode=std.mode if std else "",
    )
    t0 = time.perf_counter()

    def lap(stage: str) -> None:
        report.stage_ms[stage] = round((time.perf_counter() - t0) * 1000, 2)

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError:
        lap("tcp")
        return _not_listening(report)
    except TimeoutError:
        lap("tcp")
        return _unreachable(report, f"TCP connect did not complete within {timeout:g} s")
    except OSError as exc:
        lap("tcp")
        return _unreachable(report, f"TCP connect failed: {exc.strerror or exc}")
    lap("tcp")
    try:
        return await _converse(report, reader, writer, timeout, settle, lap)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError as exc:  # the peer reset the socket; nothing left to close
            log.debug("closing probe socket to %s:%s: %s", host, port, exc)


async def _converse(
    report: PortReport,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timeout: float,
    settle: float,
    lap: Callable[[str], None],
) -> PortReport:
    # ---- stage 2: version handshake
    messages = _Messages(reader)
    try:
        writer.write(hello_bytes())
        await writer.drain()
        reply = await asyncio.wait_for(messages.next(), timeout)
    except TimeoutError:
        lap("handshake")
        return _stalled(report, timeout)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        lap("handshake")
        return _refused(
            report,
            f"the peer closed the connection during the API handshake ({_why_closed(exc)})",
            [
                "TWS/Gateway closes API connections from addresses that are not trusted: "
                + API_SETTINGS_HINT,
                "It also does this when its API connection limit is reached (32 clients).",
            ],
        )
    except _NotTws as exc:
        lap("handshake")
        return _refused(
            report,
            f"the peer does not speak the TWS API: {exc}",
            ["Another program listens on this port; check 'Socket port' in the API settings."],
        )
    lap("handshake")
    if len(reply) != 2 or not reply[0].isdigit():
        return _refused(
            report,
            f"unexpected handshake reply {reply[:4]!r} (expected server version and time)",
            ["Is this really a TWS/IB Gateway API port?"],
        )
    report.server_version = int(reply[0])
    report.connection_time = reply[1]
    if report.server_version < MIN_CLIENT_VERSION:
        return _refused(
            report,
            f"server version {report.server_version} is older than {MIN_CLIENT_VERSION} "
            "(TWS/Gateway 972), the minimum ib_insync supports",
            ["Upgrade TWS/IB Gateway to a current stable or latest release."],
        )

    # ---- stage 3: START_API, then wait for nextValidId + managedAccounts
    try:
        writer.write(frame([71, 2, report.client_id, ""]))
        await writer.drain()
    except ConnectionError as exc:
        lap("start")
        return _refused(report, f"connection lost sending START_API ({exc})", [])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got_accounts = False
    closed_why = ""
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            fields = await asyncio.wait_for(messages.next(), remaining)
        except TimeoutError:
            break
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            closed_why = _why_closed(exc)
            break
        except _NotTws as exc:
            closed_why = f"garbage from the peer: {exc}"
            break
        _take(report, fields)
        if any(m.code == 326 for m in report.messages):
            lap("start")
            return _client_id_in_use(report, writer.get_extra_info("sockname"))
        if got_accounts is False and report.accounts and report.next_order_id is not None:
            got_accounts = True
            lap("start")
            deadline = min(deadline, loop.time() + settle)
    if got_accounts:
        report.stage_ms["total"] = report.stage_ms.get("start", 0.0)
        return _healthy(report)
    lap("start")
    if closed_why:
        return _refused(
            report,
            f"handshake done (server version {report.server_version}) but the connection "
            f"was closed after START_API ({closed_why})",
            [
                "A client id clash can look like this when TWS drops the socket before its "
                f"326 arrives: retry with another --client-id (now {report.client_id}).",
                API_SETTINGS_HINT,
            ],
        )
    missing = [
        name
        for name, ok in (
            ("nextValidId", report.next_order_id is not None),
            ("managedAccounts", bool(report.accounts)),
        )
        if not ok
    ]
    return _start_stalled(report, timeout, missing)


def _take(report: PortReport, fields: list[str]) -> None:
    """Record one incoming message; ignore the ones a probe does not care about."""
    if not fields or not fields[0].isdigit():
        return
    msg_id = int(fields[0])
    if msg_id == 9 and len(fields) >= 3 and fields[2].lstrip("-").isdigit():
        report.next_order_id = int(fields[2])
    elif msg_id == 15 and len(fields) >= 3:
        report.accounts = [a for a in fields[2].split(",") if a]
        report.mode = _mode_of_accounts(report.accounts)
    elif msg_id == 4 and len(fields) >= 5 and fields[3].lstrip("-").isdigit():
        code = int(fields[3])
        report.messages.append(IbMessage(code, fields[4], str(ib_codes.explain(code).category)))


def _why_closed(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        if exc.partial:
            return f"closed after {len(exc.partial)} byte(s) of a message"
        return "closed by peer"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- verdicts


def _where(report: PortReport) -> str:
    if report.product:
        return f"{report.product} {report.expected_mode} port"
    return "this port"


def _not_listening(report: PortReport) -> PortReport:
    report.diagnosis = Diagnosis.NOT_LISTENING
    report.detail = "connection refused: nothing is listening on this port"
    report.hints = [
        f"Start TWS or IB Gateway and log in; by convention this is the {_where(report)}."
        if report.product
        else "Start TWS or IB Gateway and log in.",
        "If it is running, its API 'Socket port' differs, or 'Enable ActiveX and Socket "
        "Clients' is off (Gateway always listens). Standard ports: 7497 TWS paper, "
        "7496 TWS live, 4002 Gateway paper, 4001 Gateway live.",
        "In Docker, publish the port and check that the Gateway container is healthy "
        "(it restarts daily and is down for a minute or two).",
    ]
    return report


def _unreachable(report: PortReport, detail: str) -> PortReport:
    report.diagnosis = Diagnosis.UNREACHABLE
    report.detail = detail
    report.hints = [
        "The host does not answer: wrong address, host down, or a firewall drops the "
        "packets. Check the host name and any firewall between here and TWS.",
    ]
    return report


def _stalled(report: PortReport, timeout: float) -> PortReport:
    report.diagnosis = Diagnosis.HANDSHAKE_STALLED
    report.detail = (
        f"TCP connection accepted but the API handshake got no answer within {timeout:g} s"
    )
    report.hints = [DIALOG_HINT, API_SETTINGS_HINT]
    if not _is_loopback(report.host):
        report.hints.append(
            "You are connecting from another machine: 'Allow connections from localhost "
            "only' must be off and this machine's IP must be in 'Trusted IPs'."
        )
    report.hints.append(
        "TWS may also be frozen (e.g. during its daily restart or a login dialog): "
        "look at its window or the Gateway container's logs."
    )
    return report


def _refused(report: PortReport, detail: str, hints: list[str]) -> PortReport:
    report.diagnosis = Diagnosis.HANDSHAKE_REFUSED
    report.detail = detail
    report.hints = hints
    return report


def _client_id_in_use(report: PortReport, own: object = None) -> PortReport:
    report.diagnosis = Diagnosis.CLIENT_ID_IN_USE
    report.detail = (
        f"handshake done (server version {report.server_version}) but client id "
        f"{report.client_id} is refused (326: already in use)"
    )
    report.hints = [
        f"Another API client is connected with client id {report.client_id}: another "
        "script, a second copy of the hub, or a half-open socket left by a process that "
        "died. TWS frees a half-open socket's id only after a while (minutes).",
        "Give every script its own id: `ibhub lease` hands out free ids from the hub. "
        "Re-run with --client-id N to probe another id.",
    ]
    peers = _local_peers(report.host, report.port, own)
    if peers is None:
        report.hints.append(
            "Cannot list the local processes connected to this port: psutil is missing "
            "(a runtime dependency of ibhub; pip install psutil).")
    elif peers:
        report.hints.append(
            "Local processes with a connection to this port (the holder is among them "
            "unless its socket is half-open): " + "; ".join(peers)
        )
    return report


def _start_stalled(report: PortReport, timeout: float, missing: list[str]) -> PortReport:
    report.diagnosis = Diagnosis.START_STALLED
    report.detail = (
        f"handshake done (server version {report.server_version}) but START_API got no "
        f"{' or '.join(missing)} within {timeout:g} s"
    )
    report.hints = [
        DIALOG_HINT,
        "TWS/Gateway may still be logging in or synchronising after its daily restart; "
        "retry in a minute.",
        "An empty account list means the login is not complete (or 2FA is pending).",
    ]
    return report


def _healthy(report: PortReport) -> PortReport:
    report.diagnosis = Diagnosis.HEALTHY
    accounts = ",".join(report.accounts)
    report.detail = (
        f"connected: server version {report.server_version}, accounts {accounts} "
        f"({report.mode}), next order id {report.next_order_id}"
    )
    hints: list[str] = []
    if report.expected_mode and report.mode and report.expected_mode != report.mode:
        hints.append(
            f"Port {report.port} is the {report.expected_mode} port by convention, but the "
            f"accounts look {report.mode}: check that you trade where you think you do."
        )
    for m in report.messages:
        if m.code in (2103, 2105, 2157, 2110, 1100):
            hints.append(f"{m.code}: {ib_codes.explain(m.code).meaning}")
    farm_codes = {m.code for m in report.messages}
    if not farm_codes & {2104, 2106, 2158, 2107, 2108, 2119}:
        hints.append(
            "No data-farm status messages (2104/2106/2158) arrived: normal for some "
            "setups, but if market data is missing check the farms in TWS."
        )
    report.hints = hints
    return report


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local_peers(host: str, port: int, own: object = None) -> list[str] | None:
    """Best effort: local processes with an established connection to ``port``.

    Only meaningful for a local TWS; may see only this user's processes. ``own`` is
    the probe's own socket address, left out of the list. None when psutil (a runtime
    dependency) is missing, which the report says; other failures are silent by
    design: this is a hint, not a diagnosis.
    """
    if not _is_loopback(host):
        return []
    try:
        import psutil
    except ImportError:
        return None
    found: list[str] = []
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    for c in conns:
        if c.status != psutil.CONN_ESTABLISHED or not c.raddr or c.raddr.port != port:
            continue
        if c.pid is None or (isinstance(own, tuple) and tuple(c.laddr) == own[:2]):
            continue
        try:
            proc = psutil.Process(c.pid)
            cmd = " ".join(" ".join(proc.cmdline()).split())[:80] or proc.name()
        except psutil.Error:
            continue
        found.append(f"pid {c.pid} ({cmd}) from local port {c.laddr.port}")
    return sorted(set(found))


# --------------------------------------------------------------------------- several ports


async def probe_ports(
    host: str,
    ports: list[int],
    *,
    client_id: int = PROBE_CLIENT_ID,
    timeout: float = 3.0,
    settle: float = 0.3,
) -> list[PortReport]:
    """Probe several ports at once, so the whole check takes about one timeout."""
    return list(
        await asyncio.gather(
            *(
                probe_gateway(host, p, client_id=client_id, timeout=timeout, settle=settle)
                for p in ports
            )
        )
    )


def overall_gateway_code(reports: list[PortReport]) -> int:
    """0 if any port is healthy, else the exit code of the most informative failure."""
    if not reports:
        return 0
    if any(r.diagnosis is Diagnosis.HEALTHY for r in reports):
        return 0
    best = min(reports, key=lambda r: _INFORMATIVENESS.index(r.diagnosis))
    return best.exit_code


# --------------------------------------------------------------------------- hub check


async def check_hub(endpoint: str, *, timeout: float = 2.0) -> HubReport:
    """Ask a running hub for its status over its request socket (raw zmq + ibhub.wire).

    A fresh REQ socket with linger 0: if the hub never answers, closing it drops the
    queued request instead of hanging the process. A hub that requires CURVE is
    reached with the SDK's keys from ``$IBHUB_SERVER_KEY`` / ``$IBHUB_CLIENT_KEY_FILE``.
    """
    import msgspec
    import zmq
    import zmq.asyncio

    from ibhub import protocol, wire
    from ibhub.client.curve import client_curve
    from ibhub.keys import KeyFileError

    t0 = time.perf_counter()
    report = HubReport(endpoint=endpoint, diagnosis=Diagnosis.HUB_NOT_ANSWERING, detail="")
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        try:
            curve = client_curve()  # $IBHUB_SERVER_KEY / $IBHUB_CLIENT_KEY_FILE, else plain
        except KeyFileError as exc:
            report.detail = f"CURVE keys: {exc}"
            report.hints = ["See docs/operations.md, 'Security / remote clients'."]
            return report
        try:
            if curve is not None:
                curve.apply(sock)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            report.detail = f"cannot use endpoint {endpoint!r}: {exc}"
            report.hints = ["Endpoints look like tcp://127.0.0.1:5571 or ipc:///path."]
            return report
        await sock.send(wire.encode(protocol.GetStatus(id=1)))
        if not await sock.poll(int(timeout * 1000)):
            report.detail = f"no answer to a status request within {timeout:g} s"
            report.hints = [
                "Is the hub running? Start it with `ibhub run` (or check `systemctl status "
                "ibhub` / the container's logs).",
                f"Check the endpoint: {endpoint} (set with --hub, or $IBHUB_RPC).",
                "A hub bound beyond loopback requires CURVE: set $IBHUB_SERVER_KEY and "
                "$IBHUB_CLIENT_KEY_FILE, with this client's key on the hub's allow-list "
                "(the hub logs refused keys).",
            ]
            return report
        payload = await sock.recv()
    finally:
        sock.close(linger=0)
        ctx.term()
        report.elapsed_ms = round((time.perf_counter() - t0) * 1000, 2)
    try:
        reply = wire.decode_reply(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        report.diagnosis = Diagnosis.HUB_REFUSED
        report.detail = f"the endpoint answered, but not with an ibhub reply: {exc}"
        report.hints = ["Another program may use this endpoint, or hub and client versions differ."]
        return report
    if isinstance(reply, protocol.Error):
        report.diagnosis = Diagnosis.HUB_REFUSED
        report.detail = f"the hub refused the status request: {reply.code}: {reply.message}"
        return report
    if not isinstance(reply, protocol.StatusReply):
        report.diagnosis = Diagnosis.HUB_REFUSED
        report.detail = f"unexpected reply type {type(reply).__name__} to a status request"
        return report
    report.status = msgspec.to_builtins(reply)
    where = f"{reply.host}:{reply.port} as client id {reply.client_id}"
    if reply.connected and reply.state == protocol.UpstreamState.CONNECTED:
        report.diagnosis = Diagnosis.HUB_HEALTHY
        report.detail = (
            f"hub answers; upstream CONNECTED to {where}, server version "
            f"{reply.server_version}, accounts {','.join(reply.accounts)}, "
            f"{len(reply.leases)} lease(s), {len(reply.subscriptions)} subscription(s), "
            f"{reply.lines_used}/{reply.lines_max} lines, {reply.reconnect_count} reconnect(s)"
        )
        return report
    report.diagnosis = Diagnosis.HUB_UPSTREAM_DOWN
    report.detail = (
        f"hub answers but its upstream is {reply.state} (Gateway {where}, "
        f"{reply.reconnect_count} reconnect(s) so far)"
    )
    report.hints = [
        f"Run `ibhub doctor --port {reply.port}` to see why the Gateway does not accept "
        "the hub; during the Gateway's daily restart this is expected for a minute or two.",
    ]
    return report
