"""The hub's settings: one object built from defaults, a config file, environment and flags.

Precedence, lowest to highest (:func:`load_settings`): built-in defaults < TOML
config file (``--config``, ``$IBHUB_CONFIG``, else the first of ``./ibhub.toml``,
``~/.config/ibhub/ibhub.toml``, ``/etc/ibhub/ibhub.toml``) < environment (a ``.env``
file in the working directory, then the real environment) < command-line flags.
Environment variables use the ``IBHUB_`` prefix (``IBHUB_LINES_MAX=50``). The three
upstream settings also honour the names scripts already use for a direct
connection: ``IB_HOST``, ``IB_PORT`` and ``IB_CLIENT_ID``. When no source names a
port, ``load_settings(detect_port=True)`` probes the standard ports (paper before
live). A bad value raises :class:`ConfigError` naming the setting, where the value
came from and what is accepted, so a typo in a unit file fails at start-up with a
readable message instead of a pydantic traceback.

The layering is done here by hand rather than with pydantic-settings' source
machinery because ``ibhub config show`` must say where every value came from.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import tomllib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from ibhub.orders.risk import DEFAULT_MAX_BY_SEC_TYPE
from ibhub.wire import DEFAULT_PUB, DEFAULT_RPC, MAX_REQUEST_BYTES


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting."""


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "ibhub"


# ``ibhub run --sim`` without a data_dir of its own keeps its journal here, apart from
# a real hub's: simulated orders must never be restored into a session with a real
# Gateway, nor a real hub's orders into the simulator's.
SIM_DATA_SUBDIR = "sim"


def is_loopback_host(host: str) -> bool:
    """True for 127.x.y.z, ::1 and localhost: the hub's own machine."""
    return host == "localhost" or host == "::1" or host.startswith("127.")


class HubSettings(BaseSettings):
    """Everything ``ibhub run`` can be told. Times are seconds."""

    model_config = SettingsConfigDict(
        env_prefix="IBHUB_",
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    # Upstream Gateway / TWS.
    gateway_host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("gateway_host", "IBHUB_GATEWAY_HOST", "IB_HOST"),
    )
    gateway_port: int = Field(
        default=4002,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("gateway_port", "IBHUB_GATEWAY_PORT", "IB_PORT"),
    )
    client_id: int = Field(
        default=0,
        ge=0,
        validation_alias=AliasChoices("client_id", "IBHUB_CLIENT_ID", "IB_CLIENT_ID"),
    )
    connect_timeout: float = Field(default=4.0, gt=0)
    request_timeout: float = Field(default=30.0, gt=0)  # contract details / historical bars
    reconnect_backoff_initial: float = Field(default=0.5, gt=0)
    reconnect_backoff_max: float = Field(default=30.0, gt=0)
    reconnect_max_attempts: int = Field(default=0, ge=0)  # 0 = forever
    # 1 live, 2 frozen, 3 delayed, 4 delayed-frozen (IB reqMarketDataType), set per session.
    market_data_type: int = Field(default=1, ge=1, le=4)
    # No tick for this long while subscribed and connected: "stale" on hub.status; 0 = off.
    stale_after: float = Field(default=30.0, ge=0)

    # ZeroMQ endpoints.
    pub: str = DEFAULT_PUB
    rpc: str = DEFAULT_RPC
    # A request frame above this is answered too_large unread (4x this: ZeroMQ drops
    # the peer). Real requests are a few hundred bytes.
    max_request_bytes: int = Field(default=MAX_REQUEST_BYTES, ge=4096, le=64 << 20)

    # Leases and market-data lines.
    lines_max: int = Field(default=100, ge=1)
    # Market depth: IB gives an account 3 depth subscriptions at once (more
    # with market-data boosters); the hub shares one per instrument and refuses beyond
    # depth_max. Each is a SMART book of depth_rows rows a side.
    depth_max: int = Field(default=3, ge=0)
    depth_rows: int = Field(default=10, ge=1, le=20)
    heartbeat_interval: float = Field(default=1.0, gt=0)
    lease_timeout: float = Field(default=3.0, gt=0)  # missed heartbeats before a lease expires
    # NoDecode: the environment gives "1-999" (parsed below), not JSON.
    raw_client_id_range: Annotated[tuple[int, int], NoDecode] = (1, 999)
    # Separate caps on the ids SDK leases and raw leases (`ibhub lease`) may hold, so
    # neither kind can take the ids the other needs (with the default range: 400 raw
    # ids at most leaves 599 for scripts). A raw id leased without a ttl lives
    # raw_lease_ttl seconds (renewable; 0 = until released), and no ttl may exceed it.
    lease_max: int = Field(default=500, ge=1)
    raw_lease_max: int = Field(default=400, ge=0)
    raw_lease_ttl: float = Field(default=86_400.0, ge=0)
    # Script names are bound to their first claimant's secret or CURVE key (docs/
    # security.md, "Script names"), in DATA_DIR/names.db. A binding not claimed for
    # name_binding_ttl seconds is forgotten (never while its name has a live lease or
    # working orders); 0 = kept until an operator forgets it (`ibhub names --forget`).
    name_binding_ttl: float = Field(default=30 * 86_400.0, ge=0)

    # Roles (docs/security.md): never what a client claims. Clients on loopback/ipc
    # (no CURVE) get local_role; operator needs the token in operator_token_file
    # (default DATA_DIR/operator.token, created 0600 at start). With CURVE, a key's role
    # comes from the lists below (Z85 keys or key files), else curve_default_role.
    # "readonly" may always be asked for.
    local_role: Literal["trader", "readonly"] = "trader"
    operator_token_file: Path | None = None
    curve_default_role: Literal["trader", "readonly"] = "trader"
    curve_operator_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    curve_trader_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    curve_readonly_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # NATS JetStream bridge (docs/scale-out.md; `ibhub run --nats URL`; needs the `nats`
    # extra). Off while nats_urls is empty. Every PUB topic is mirrored to
    # ibhub.<nats_hub>.<topic> and kept in the stream IBHUB_<nats_hub> for
    # nats_stream_max_age seconds / nats_stream_max_bytes bytes; requests are served on
    # ibhub.<nats_hub>.rpc.<user>, the role of a NATS user (or nkey) from [nats_roles].
    nats_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    nats_hub: str = Field(default="hub", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_user: str = ""
    nats_password: str = ""
    nats_token: str = ""
    nats_creds_file: Path | None = None
    nats_nkey_seed_file: Path | None = None
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
    nats_stream_max_age: float = Field(default=3600.0, gt=0)
    nats_stream_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    nats_stream_storage: Literal["file", "memory"] = "file"
    nats_roles: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    nats_default_role: Literal["trader", "readonly"] = "readonly"

    # Embedded simulator (``ibhub run --sim``).
    sim: bool = False
    sim_seed: int = 1
    sim_tick_rate: float = Field(default=4.0, gt=0)
    # The embedded simulator's fault control (`ibhub sim-fault ...`, as for `ibhub sim`)
    # on 127.0.0.1:PORT; -1 = none. A port in use is logged and the hub runs without it.
    sim_control_port: int = Field(default=4010, ge=-1, le=65535)
    # the simulator's managed accounts (``--sim-accounts DU111,DU222``), each with its own
    # positions and cash
    sim_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["DU1234567"], min_length=1)
    # ``ibhub run --sim --replay DIR``: the embedded simulator streams a recording
    # (docs/recording.md); speed 0 = as fast as the hub takes it.
    sim_replay: str | None = None
    sim_replay_speed: float = Field(default=1.0, ge=0)

    data_dir: Path = Field(default_factory=_default_data_dir)

    # Trading (ibhub.orders.service; docs/orders.md). orders=false: a data-only hub that
    # answers order requests with bad_request.
    orders: bool = True
    # Orders on a live port (7496/4001) or a non-paper account are refused unless this
    # is set (--live, IBHUB_ALLOW_LIVE=1): a demo config must never trade real money.
    allow_live: bool = False
    read_only: bool = False  # refuse every order; data keeps flowing
    max_order_quantity: float = Field(default=10_000.0, gt=0)  # per order, any sec_type
    # Per security type maxima overriding max_order_quantity ("CASH=1000000,FUT=50" in
    # the environment, a table in TOML). FX counts currency units, hence its own default.
    max_order_quantity_by_sec_type: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_BY_SEC_TYPE)
    )
    fractional_shares: bool = False  # STK orders may be fractional (needs IB's permission)
    min_fx_quantity: float = Field(default=1.0, gt=0)  # smallest CASH order, base units
    price_band_pct: float = Field(default=10.0, gt=0)  # limit/stop within this % of last
    order_rate: float = Field(default=20.0, gt=0)  # per lease, orders/s (token bucket)
    order_burst: float = Field(default=50.0, gt=0)
    pacer_rate: float = Field(default=40.0, gt=0, le=50)  # all upstream msgs/s (IB: 50)
    # Back-pressure (docs/orders.md, "Back-pressure"): a place or modify that would wait
    # longer than this in the upstream queue is refused at once with "busy".
    max_order_delay: float = Field(default=2.0, gt=0)
    # Requests that may wait for the pacer at once: all of them (orders, subscriptions,
    # queries; the hub's own cancels and re-subscriptions are never refused), and one
    # lease's orders.
    pacer_queue_max: int = Field(default=1000, ge=1)
    pacer_queue_per_lease: int = Field(default=50, ge=1)
    journal_sync: Literal["FULL", "NORMAL"] = "FULL"  # FULL survives a power cut
    # Commits no reply waits on (the Gateway's order status, fills, commissions; send
    # markers): NORMAL survives kill -9, and what a power cut could lose the Gateway
    # tells again at reconciliation (ibhub/orders/journal.py, docs/orders.md). FULL:
    # an fsync for those too (0.6-2 ms more on the fill path).
    journal_sync_updates: Literal["FULL", "NORMAL"] = "NORMAL"
    # Send a new order upstream as soon as its journal insert is committed, while its
    # fsync runs (the reply still waits for the fsync), instead of after the reply.
    # Off: on a 2-vCPU host with the Gateway on it, the overlap slowed the fsync and the
    # reply and gained nothing on the fill (docs/orders.md "Durability",
    # docs/performance.md "Order path, hub side" (section 8.3)).
    order_send_at_commit: bool = False

    # Health and metrics over HTTP on 127.0.0.1 (/health, /metrics); 0 = off.
    http_port: int = Field(default=8570, ge=0, le=65535)

    # Logging: readable lines by default, one JSON object per line for log shippers.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Alerts (upstream lost/restored, order rejections, pacing violations) always go
    # to the log (WARNING) and hub.status; optionally also to a webhook (JSON POST)
    # and a JSON-lines file.
    alert_webhook: str | None = None
    alert_webhook_timeout: float = Field(default=5.0, gt=0)
    alert_file: Path | None = None

    # TWS-protocol front door for existing TWS API scripts (loopback); None = off, 0 = any port.
    tws_port: int | None = Field(default=None, ge=0, le=65535)
    # The front door's "Master API client ID" (IB's Gateway setting of that name): the
    # TWS script connected with this client id sees the whole book (every script's and
    # external orders) in reqAllOpenOrders, reqCompletedOrders and reqExecutions; other
    # clients see their own orders. None = no master (docs/security.md).
    tws_master_client_id: int | None = Field(default=None, ge=0)

    # Descriptors and connection caps (ibhub.hub.limits, docs/operations.md "Connection
    # limits"): descriptors kept back from clients for the upstream, journal and health
    # server, and the most concurrent connections per listener (0 = an equal share of
    # the open-file limit left after the reserve).
    fd_reserve: int = Field(default=64, ge=16)
    max_tws_connections: int = Field(default=0, ge=0)
    max_rpc_connections: int = Field(default=0, ge=0)
    max_pub_connections: int = Field(default=0, ge=0)

    # The lane (ibhub.hub.lane, docs/protocol.md "The lane"): a local plain-socket fast
    # path for SDK requests and a lease's own order/error events, beside ZeroMQ. "unix"
    # (default: <data_dir>/lane.sock, mode 0600), "off", or "tcp://127.0.0.1:PORT"
    # (loopback only; PORT 0 picks one). lane_max_connections caps concurrent lane
    # connections (more are refused and counted).
    lane: str = "unix"
    lane_max_connections: int = Field(default=64, ge=1)

    # CURVE (ibhub.hub.security): required to bind pub/rpc to a non-loopback address. The
    # hub's key pair (a .key_secret file from `ibhub keys generate`) and the client
    # public keys allowed in: a directory of .key files and/or Z85 keys listed here.
    curve_server_secret_key_file: Path | None = None
    curve_authorized_keys_dir: Path | None = None
    curve_authorized_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("pub", "rpc")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"{value!r} is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)")
        return value

    @field_validator("lane")
    @classmethod
    def _lane(cls, value: str) -> str:
        value = value.strip()
        if value in ("unix", "off"):
            return value
        if value.startswith("tcp://"):
            host, sep, port = value[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            if not sep or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"lane {value!r}: expected tcp://127.0.0.1:PORT")
            if not is_loopback_host(host):
                raise ValueError(f"lane {value!r}: the lane binds loopback only (127.0.0.1, "
                                 "::1 or localhost); it carries lease secrets in the clear")
            return value
        raise ValueError(f"lane {value!r}: expected 'unix', 'off' or tcp://127.0.0.1:PORT")

    @field_validator("http_port", mode="before")
    @classmethod
    def _port_off(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() in ("off", "none", "no", "false"):
                return 0
            if not value.strip().isdigit():
                raise ValueError("expected a port number 1-65535, or 0 / off for no HTTP server")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in ("debug", "info", "warning", "error") \
            else value.lower()

    @field_validator("alert_webhook", "alert_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("alert_webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("curve_server_secret_key_file", "curve_authorized_keys_dir",
                     "operator_token_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("curve_authorized_keys", "curve_operator_keys", "curve_trader_keys",
                     "curve_readonly_keys", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        """The environment gives ``KEY1,KEY2`` (commas or spaces); a TOML file a list."""
        if isinstance(value, str):
            return [k for k in value.replace(",", " ").split() if k]
        return value

    @field_validator("nats_urls", mode="before")
    @classmethod
    def _nats_urls(cls, value: Any) -> Any:
        """``nats://a:4222,nats://b:4222`` (commas or spaces) or a TOML list."""
        if isinstance(value, str):
            value = [u for u in value.replace(",", " ").split() if u]
        for url in value or ():
            if not isinstance(url, str) or not url.startswith(("nats://", "tls://", "ws://",
                                                                "wss://")):
                raise ValueError(f"{url!r} is not a NATS URL (nats://HOST:PORT or tls://...)")
        return value

    @field_validator("nats_roles", mode="before")
    @classmethod
    def _nats_roles(cls, value: Any) -> Any:
        """``alice=trader,ops=operator`` or a TOML table ``[nats_roles] alice = "trader"``."""
        if isinstance(value, str):
            pairs = {}
            for item in value.replace(",", " ").split():
                user, sep, role = item.partition("=")
                if not sep or not user:
                    raise ValueError(f"{item!r} is not USER=ROLE (e.g. alice=trader)")
                pairs[user] = role
            value = pairs
        if isinstance(value, Mapping):
            for user, role in value.items():
                if role not in ("readonly", "trader", "operator"):
                    raise ValueError(f"{user}: role must be readonly, trader or operator, "
                                     f"got {role!r}")
        return value

    @field_validator("nats_creds_file", "nats_nkey_seed_file", "nats_tls_ca_file",
                     "nats_tls_cert_file", "nats_tls_key_file", mode="before")
    @classmethod
    def _nats_path(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sim_accounts", mode="before")
    @classmethod
    def _account_list(cls, value: Any) -> Any:
        """The environment and the CLI give ``DU111,DU222`` (commas or spaces)."""
        if isinstance(value, str):
            return [a for a in value.replace(",", " ").split() if a]
        return value

    @field_validator("max_order_quantity_by_sec_type", mode="before")
    @classmethod
    def _sec_type_map(cls, value: Any) -> Any:
        """The environment gives ``CASH=1000000,FUT=50`` (commas or spaces); keys are
        security types, upper-cased; every value must be a positive number."""
        if isinstance(value, str):
            pairs = {}
            for item in value.replace(",", " ").split():
                key, sep, number = item.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"{item!r} is not SEC_TYPE=QUANTITY (e.g. CASH=1000000)")
                pairs[key.strip()] = number.strip()
            value = pairs
        if isinstance(value, Mapping):
            out = {}
            for key, number in value.items():
                try:
                    quantity = float(number)
                except (TypeError, ValueError):
                    raise ValueError(f"{key}: {number!r} is not a number") from None
                if not (quantity > 0 and quantity < float("inf")):
                    raise ValueError(f"{key}: the maximum must be a positive number")
                out[str(key).strip().upper()] = quantity
            return out
        return value

    @field_validator("raw_client_id_range", mode="before")
    @classmethod
    def _range(cls, value: Any) -> Any:
        """Accept ``"1-999"`` or ``"1..999"`` as well as a pair."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = value.strip().strip("[]")
        if isinstance(value, str):
            for sep in ("..", "-", ":", ","):
                if sep in value:
                    lo, hi = value.split(sep, 1)
                    return (lo.strip(), hi.strip())
            raise ValueError(f"{value!r} is not a range like 1-999")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HubSettings:
        lo, hi = self.raw_client_id_range
        if lo < 0 or hi < lo:
            raise ValueError(f"raw_client_id_range {lo}..{hi} is empty or negative")
        if self.reconnect_backoff_max < self.reconnect_backoff_initial:
            raise ValueError(
                "reconnect_backoff_max must be >= reconnect_backoff_initial "
                f"({self.reconnect_backoff_max} < {self.reconnect_backoff_initial})"
            )
        if (self.tws_port and not self.sim and self.gateway_port == self.tws_port
                and is_loopback_host(self.gateway_host)):
            raise ValueError(
                f"gateway_port {self.gateway_port} is the hub's own TWS front door "
                f"(tws_port): the hub would connect to itself; point gateway_port at "
                f"the Gateway/TWS or pick another tws_port")
        return self

    @property
    def operator_token_path(self) -> Path:
        """Where the local operator token lives (``operator_token_file`` or the data dir)."""
        return self.operator_token_file or Path(self.data_dir) / "operator.token"

    @property
    def lease_ttl(self) -> float:
        """Seconds without a heartbeat after which a lease expires."""
        return self.heartbeat_interval * self.lease_timeout


# ---------------------------------------------------------------------------- loading

CONFIG_ENV = "IBHUB_CONFIG"
# Environment names besides IBHUB_<SETTING>, as scripts use them for a direct connection.
ENV_ALIASES: dict[str, str] = {
    "gateway_host": "IB_HOST",
    "gateway_port": "IB_PORT",
    "client_id": "IB_CLIENT_ID",
}
# Standard API ports in the order auto-detection prefers them: paper before live.
STANDARD_PORTS: tuple[tuple[int, str], ...] = (
    (7497, "TWS paper"),
    (4002, "IB Gateway paper"),
    (7496, "TWS live"),
    (4001, "IB Gateway live"),
)


def default_config_paths() -> list[Path]:
    """Where a config file is looked for when none is named (first existing wins)."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path("ibhub.toml"), Path(xdg) / "ibhub" / "ibhub.toml", Path("/etc/ibhub/ibhub.toml")]


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys are setting names; a table is a prefix
    (``[alert] webhook = ...`` is ``alert_webhook``), unless the table's name is itself a
    setting (``[max_order_quantity_by_sec_type] CASH = 2e6``: a mapping setting's value).
    Unknown names are an error."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in HubSettings.model_fields:
            for sub, inner in value.items():
                if isinstance(inner, dict):
                    raise ConfigError(f"config file {path}: [{key}.{sub}] nests too deep")
                flat[f"{key}_{sub}"] = inner
        else:
            flat[key] = value
    known = HubSettings.model_fields
    for name in flat:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown setting {name!r} in config file {path}{hint}")
    return flat


def _env_value(name: str, raw: str) -> Any:
    """An environment string as pydantic-settings would hand it over: JSON-decoded for
    list/tuple/dict/set settings (unless marked ``NoDecode``), else the string."""
    field = HubSettings.model_fields[name]
    if any(m is NoDecode or isinstance(m, NoDecode) for m in field.metadata):
        return raw
    kinds = [get_origin(a) for a in (get_args(field.annotation)
                                     if isinstance(field.annotation, UnionType)
                                     else (field.annotation,))]
    if any(k in (list, tuple, dict, set) for k in kinds):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def probe_port(host: str, port: int, timeout: float) -> bool:
    """True if something accepts a TCP connection on ``host:port`` (no API handshake)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def detect_gateway_port(
    host: str, timeout: float = 0.3, ports: Sequence[tuple[int, str]] = STANDARD_PORTS
) -> int | None:
    """The first of ``ports`` (paper before live) that accepts a connection.

    All are probed at once, so this takes at most ``timeout`` whatever the answers.
    """
    with ThreadPoolExecutor(len(ports)) as pool:
        answers = list(pool.map(lambda p: probe_port(host, p[0], timeout), ports))
    for (port, _), ok in zip(ports, answers, strict=True):
        if ok:
            return port
    return None


def load_settings(**overrides: Any) -> HubSettings:
    """Build settings from every source; ``overrides`` are the command-line flags.

    Keyword arguments that are not settings steer the loading (see
    :func:`load_settings_with_sources`). Raises :class:`ConfigError` naming every bad
    setting.
    """
    return load_settings_with_sources(**overrides)[0]


def load_settings_with_sources(
    *,
    config: str | Path | None = None,
    search: Sequence[Path] | None = None,
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    detect_port: bool = False,
    detect_timeout: float = 0.3,
    detect_ports: Sequence[tuple[int, str]] = STANDARD_PORTS,
    **overrides: Any,
) -> tuple[HubSettings, dict[str, str]]:
    """Settings plus, for each one, where its value came from.

    ``config``: a TOML file (else ``$IBHUB_CONFIG``, else the first file of ``search``
    that exists, default :func:`default_config_paths`). ``env``: the environment
    (default ``os.environ``); ``env_file``: a dotenv file read beneath it (None = none).
    ``overrides``: flag values; None means "not given". ``detect_port``: probe the
    standard ports when no source set ``gateway_port`` (never with ``sim``).
    """
    environ = dict(os.environ if env is None else env)
    fields = HubSettings.model_fields
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, field in fields.items():
        values[name] = field.get_default(call_default_factory=True)
        sources[name] = "default"

    dotenv: dict[str, str] = {}
    dotenv_path = Path(env_file) if env_file is not None else None
    if dotenv_path is not None and dotenv_path.is_file():
        dotenv = _read_dotenv(dotenv_path)

    config_path: Path | None = None
    named = config or environ.get(CONFIG_ENV) or dotenv.get(CONFIG_ENV)
    if named:
        config_path = Path(named).expanduser()
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path} does not exist")
    else:
        for candidate in default_config_paths() if search is None else search:
            if candidate.is_file():
                config_path = candidate
                break
    if config_path is not None:
        for name, value in read_config_file(config_path).items():
            values[name] = value
            sources[name] = f"config file {config_path}"

    # Environment: the .env file first, the real environment over it; per setting the
    # IBHUB_ name wins over the IB_ alias.
    layers = [(".env", {k.upper(): v for k, v in dotenv.items()}),
              ("env", {k.upper(): v for k, v in environ.items()})]
    for origin, layer in layers:
        for name in fields:
            for var in (f"IBHUB_{name.upper()}", ENV_ALIASES.get(name)):
                if var is None:
                    continue
                raw = layer.get(var)
                if raw is None or raw == "":  # VAR= (empty) means "not set"
                    continue
                values[name] = _env_value(name, raw)
                where = f" ({dotenv_path})" if origin == ".env" else ""
                sources[name] = f"{origin} {var}{where}"
                break

    for name, value in overrides.items():
        if value is None:
            continue
        values[name] = value
        sources[name] = "command line"

    settings = _build(values, sources)
    if settings.sim and sources["data_dir"] == "default":
        # Orders and names apart; the operator token stays where the SDK and the CLI
        # look for it (it says who the operator is, not what the hub traded).
        update: dict[str, Any] = {"data_dir": Path(settings.data_dir) / SIM_DATA_SUBDIR}
        if settings.operator_token_file is None:
            update["operator_token_file"] = settings.operator_token_path
        settings = settings.model_copy(update=update)
        sources["data_dir"] = "default for --sim (apart from a real hub's journal)"
    if detect_port and sources["gateway_port"] == "default" and not settings.sim:
        if settings.tws_port and is_loopback_host(settings.gateway_host):
            # Never "detect" the hub's own front door (7497 is also TWS paper's port).
            detect_ports = [p for p in detect_ports if p[0] != settings.tws_port]
        found = detect_gateway_port(settings.gateway_host, detect_timeout, detect_ports)
        if found is None:
            tried = ", ".join(str(p) for p, _ in detect_ports)
            sources["gateway_port"] = f"default (auto-detect: nothing listening on {tried})"
        else:
            label = dict(detect_ports)[found]
            settings = settings.model_copy(update={"gateway_port": found})
            sources["gateway_port"] = f"auto-detected ({label})"
    return settings, sources


def _build(values: dict[str, Any], sources: dict[str, str]) -> HubSettings:
    unknown = [n for n in values if n not in HubSettings.model_fields]
    if unknown:
        close = {n: difflib.get_close_matches(n, list(HubSettings.model_fields), n=1)
                 for n in unknown}
        raise ConfigError("unknown setting " + "; ".join(
            f"{n!r}" + (f" (did you mean {close[n][0]}?)" if close[n] else "") for n in unknown))
    try:
        return HubSettings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err.get("loc", ())
            msg = err.get("msg", "invalid")
            if loc:
                name = str(loc[0])
                where = ".".join(str(p) for p in loc)
                origin = sources.get(name, "")
                origin = f" from {origin}" if origin and origin != "default" else ""
                problems.append(f"{where}{origin}: {msg} (got {err.get('input')!r})")
            else:
                problems.append(msg)
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
