"""The hub's settings: one object built from defaults, environment and flags.

Environment variables use the ``IBHUB_`` prefix (``IBHUB_LINES_MAX=50``). The three
upstream settings also honour the names scripts already use for a direct
connection: ``IB_HOST``, ``IB_PORT`` and ``IB_CLIENT_ID``. A bad value raises
:class:`ConfigError` naming the setting, so a typo in a unit file fails at start-up
with a readable message instead of a pydantic traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from ibhub.wire import DEFAULT_PUB, DEFAULT_RPC


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting."""


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "ibhub"


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

    # Leases and market-data lines.
    lines_max: int = Field(default=100, ge=1)
    heartbeat_interval: float = Field(default=1.0, gt=0)
    lease_timeout: float = Field(default=3.0, gt=0)  # missed heartbeats before a lease expires
    # NoDecode: the environment gives "1-999" (parsed below), not JSON.
    raw_client_id_range: Annotated[tuple[int, int], NoDecode] = (1, 999)

    # Embedded simulator (``ibhub run --sim``).
    sim: bool = False
    sim_seed: int = 1
    sim_tick_rate: float = Field(default=4.0, gt=0)

    data_dir: Path = Field(default_factory=_default_data_dir)

    # TWS-protocol front door for existing TWS API scripts (loopback); None = off, 0 = any port.
    tws_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("pub", "rpc")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"{value!r} is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)")
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
        return self

    @property
    def lease_ttl(self) -> float:
        """Seconds without a heartbeat after which a lease expires."""
        return self.heartbeat_interval * self.lease_timeout


def load_settings(**overrides: Any) -> HubSettings:
    """Build settings from the environment plus ``overrides`` (None values are ignored).

    Raises :class:`ConfigError` whose message names every bad setting.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return HubSettings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err.get("loc", ())
            msg = err.get("msg", "invalid")
            if loc:
                where = ".".join(str(p) for p in loc)
                problems.append(f"{where}: {msg} (got {err.get('input')!r})")
            else:
                problems.append(msg)
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
