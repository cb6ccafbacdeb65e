"""Who may reach the hub's sockets: loopback by default, CURVE for anything else.

The hub's PUB and ROUTER sockets carry market data and take orders with no
authentication of their own, so by default they are only reachable from this
machine: ``tcp://`` on a loopback address, or ``ipc://`` / ``inproc://``
(:func:`classify_endpoint`). Binding either to any other address (``0.0.0.0``,
``*``, a LAN address, an interface name) is refused by :func:`check_bind`, before
anything is bound, unless ZeroMQ CURVE is configured.

With CURVE configured (``curve_server_secret_key_file`` plus an allow-list:
``curve_authorized_keys_dir`` and/or ``curve_authorized_keys``) both sockets are
CURVE servers whatever their address: traffic is encrypted and a client whose
public key is not on the allow-list never completes the handshake, so it gets no
reply and no event. The allow-list is checked by a ZAP handler
(:class:`AllowList`); keys added to or removed from the directory count from the
next connection attempt, without a restart.

Why ``zmq.auth.ThreadAuthenticator`` and not ``AsyncioAuthenticator``: the ZAP
handler then runs on its own thread and loop, so handshakes are answered even when
the hub's loop is busy with a burst of ticks or orders (and a slow key-directory
read never delays the hot path); it needs no particular event loop (the hub runs
uvloop); and it stops with a thread join, leaving no pending task behind at
shutdown. The cost is one mostly idle thread, only when CURVE is on.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ibhub.config import ConfigError
from ibhub.hub.leases import Peer
from ibhub.keys import (
    KeyFileError,
    PrivateFileError,
    check_z85_key,
    ensure_private_secret,
    load_secret_key_file,
    parse_key_or_file,
    public_keys_in,
    secret_file_exposed,
)

log = logging.getLogger(__name__)

ZAP_DOMAIN = "ibhub"
EndpointKind = Literal["loopback", "local", "remote"]

FIX = (
    "bind 127.0.0.1 or ipc:// (the default), or configure CURVE: `ibhub keys generate "
    "--dir DIR --name hub` for the hub and one pair per client, then set "
    "curve_server_secret_key_file and curve_authorized_keys_dir (see docs/operations.md, "
    "'Security / remote clients')"
)


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a ``tcp://HOST:PORT`` endpoint (brackets removed), else None."""
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[len("tcp://"):]
    host = rest.rpartition(":")[0] if ":" in rest else rest
    return host.strip("[]")


def classify_endpoint(endpoint: str) -> EndpointKind:
    """``loopback`` (tcp on 127.0.0.0/8, ::1, localhost), ``local`` (ipc, inproc: never
    leave the machine) or ``remote`` (everything else, including wildcards and
    interface names, which may be reachable from other hosts)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return "local"
    host = endpoint_host(endpoint)
    if host is None:
        return "remote"  # pgm, ws, udp, ...: not for the hub
    if host.lower() == "localhost":
        return "loopback"
    try:
        return "loopback" if ipaddress.ip_address(host).is_loopback else "remote"
    except ValueError:
        return "remote"


def check_bind(setting: str, endpoint: str, curve: bool) -> None:
    """Refuse (``ConfigError``) to bind ``endpoint`` off this machine without CURVE."""
    if classify_endpoint(endpoint) == "remote" and not curve:
        raise ConfigError(
            f"refusing to bind {setting} to {endpoint!r}: it is not a loopback or ipc "
            f"address, and without CURVE authentication anyone who can reach it could read "
            f"market data and place orders. Fix: {FIX}"
        )


class AllowList:
    """The client public keys allowed in: fixed ones plus a directory read on change.

    Used as a zmq.auth credentials provider: :meth:`callback` runs on the
    authenticator's thread for every CURVE handshake. The directory is re-read only
    when its modification time changes (adding or removing a file changes it); a
    directory that becomes unreadable keeps the last good list and is logged.
    """

    def __init__(self, keys: Iterable[bytes] = (), directory: Path | None = None) -> None:
        self._fixed = frozenset(keys)
        self._directory = directory
        self._dir_keys: frozenset[bytes] = frozenset()
        self._dir_stamp: int | None = None
        self._lock = threading.Lock()
        self._denied_logged: set[bytes] = set()
        self.allowed_count = 0
        self.denied_count = 0
        if directory is not None:
            self._refresh(strict=True)

    def keys(self) -> frozenset[bytes]:
        with self._lock:
            self._refresh(strict=False)
            return self._fixed | self._dir_keys

    def _refresh(self, strict: bool) -> None:
        d = self._directory
        if d is None:
            return
        try:
            stamp = d.stat().st_mtime_ns
            if stamp == self._dir_stamp:
                return
            found = frozenset(public_keys_in(d))
        except (OSError, KeyFileError) as exc:
            if strict:
                raise ConfigError(f"curve_authorized_keys_dir: {exc}") from None
            log.warning("keeping the previous CURVE allow-list: %s", exc)
            return
        self._dir_keys, self._dir_stamp = found, stamp

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            allowed = key in self.keys()
        except Exception:  # never let the ZAP thread die: it would stall every handshake
            log.exception("CURVE allow-list check failed; refusing %s", key.decode())
            allowed = False
        if allowed:
            self.allowed_count += 1
            log.debug("CURVE client %s allowed", key.decode())
        else:
            self.denied_count += 1
            if key not in self._denied_logged and len(self._denied_logged) < 1000:
                self._denied_logged.add(key)  # one line per key, however often it tries
                log.warning(
                    "refused a CURVE client with public key %s: not in the allow-list "
                    "(add its .key file to curve_authorized_keys_dir)", key.decode()
                )
        return allowed


@dataclass
class ServerSecurity:
    """The hub's socket security from its settings; ``enabled`` when CURVE is on."""

    public_key: bytes | None = None
    secret_key: bytes | None = field(default=None, repr=False)
    allow: AllowList | None = None

    @property
    def enabled(self) -> bool:
        return self.secret_key is not None

    @classmethod
    def from_settings(cls, settings: Any) -> ServerSecurity:
        """Load the server key and allow-list; ``ConfigError`` says what is wrong."""
        secret_file = getattr(settings, "curve_server_secret_key_file", None)
        keys_dir = getattr(settings, "curve_authorized_keys_dir", None)
        listed = list(getattr(settings, "curve_authorized_keys", None) or ())
        if secret_file is None:
            if keys_dir is not None or listed:
                raise ConfigError(
                    "client keys are configured (curve_authorized_keys_dir / "
                    "curve_authorized_keys) but curve_server_secret_key_file is not: the hub "
                    "needs its own key pair to run CURVE (`ibhub keys generate --name hub`)"
                )
            return cls()
        try:
            public, secret = load_secret_key_file(secret_file)
            fixed = [check_z85_key(k, "curve_authorized_keys entry") for k in listed]
        except KeyFileError as exc:
            raise ConfigError(f"CURVE: {exc}") from None
        if secret_file_exposed(secret_file):
            log.warning("%s is readable by other users: chmod 600 it", secret_file)
        if keys_dir is None and not fixed:
            raise ConfigError(
                "curve_server_secret_key_file is set but no client may connect: list client "
                "public keys in curve_authorized_keys or put their .key files in "
                "curve_authorized_keys_dir"
            )
        allow = AllowList(fixed, Path(keys_dir) if keys_dir is not None else None)
        if not allow.keys():
            log.warning("CURVE allow-list is empty: no client can connect until a key is added")
        return cls(public_key=public, secret_key=secret, allow=allow)

    def check_binds(self, **endpoints: str) -> None:
        """``check_bind`` for each ``setting=endpoint``."""
        for setting, endpoint in endpoints.items():
            check_bind(setting, endpoint, self.enabled)

    def start(self, context: zmq.Context[Any]) -> ThreadAuthenticator | None:
        """Start the ZAP handler on ``context`` (before any socket binds); None when off."""
        if not self.enabled or self.allow is None:
            return None
        auth = ThreadAuthenticator(context, log=logging.getLogger("ibhub.hub.security.zap"))
        auth.start()
        auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.allow)
        log.info("CURVE on: %d client key(s) allowed; hub public key %s",
                 len(self.allow.keys()), (self.public_key or b"").decode())
        return auth

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server (no-op when off); call before ``bind``."""
        if not self.enabled:
            return
        assert self.secret_key is not None and self.public_key is not None
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)


def stop_authenticator(auth: ThreadAuthenticator | None) -> None:
    """Stop the ZAP thread and close its sockets (before the context terminates)."""
    if auth is not None:
        auth.stop()


# ---------------------------------------------------------------------------- roles

ROLE_RANK = {"readonly": 0, "trader": 1, "operator": 2}
OPERATOR_TOKEN_BYTES = 32


class RoleRefused(Exception):
    """A Hello asked for a role its connection is not granted; the message says how to
    get it."""


def ensure_operator_token(path: Path) -> str:
    """The local operator token in ``path``, created (0600, 256 random bits) if absent.

    A file another user could read, or that this user does not own, is refused
    (``ConfigError``): whoever reads it is an operator (docs/security.md).
    """
    def make() -> str:  # called only when this process creates the file
        log.info("created the operator token %s (0600)", path)
        return secrets.token_urlsafe(OPERATOR_TOKEN_BYTES)

    try:
        return ensure_private_secret(path, make)
    except PrivateFileError as err:
        where = f"operator_token_file {path}"
        if err.kind == "create":
            assert err.cause is not None
            raise err.cause from None
        if err.kind == "read":
            msg = f"{where}: cannot read it: {err.cause}"
        elif err.kind == "owner":
            msg = (f"{where} belongs to uid {err.uid}, not to the hub's user "
                   f"(uid {os.getuid()}): remove it, the hub makes a new one")
        elif err.kind == "exposed":
            msg = (f"{where} is accessible by other users (mode {err.mode:o}): anyone who "
                   f"reads it is an operator; `chmod 600 {path}` (or remove it to have a new "
                   "one made)")
        else:
            msg = (f"{where} holds {err.length} characters, fewer than 32: remove it, the "
                   "hub makes a new one")
        raise ConfigError(msg) from None


NATS_PEER = "nats:"  # Peer.key prefix of a request that came over the NATS bridge


@dataclass
class RolePolicy:
    """Which role a Hello gets: from the hub's configuration, never from the claim.

    * ``readonly`` is always granted (a downgrade).
    * Without CURVE (loopback / ipc clients): up to ``local_role``; ``operator`` only
      with the operator token (``Hello.credential``).
    * With CURVE: up to the role listed for the client's key (``curve_operator_keys``,
      ``curve_trader_keys``, ``curve_readonly_keys``), else ``curve_default_role``. The
      operator token does not count there: one list says who the operators are, and
      a token copied off the box makes no remote key an operator.

    A role above the grant is refused (never silently lowered: a script that asked to
    trade would otherwise learn it cannot only at its first order).
    """

    curve: bool = False
    local_role: str = "trader"
    curve_default_role: str = "trader"
    key_roles: dict[str, str] = field(default_factory=dict)
    operator_token: str = field(default="", repr=False)
    token_path: Path | None = None
    # NATS bridge (ibhub.hub.nats_bridge): peers whose key is "nats:<user>" get the role
    # listed for the NATS user (or nkey) in nats_roles, else nats_default_role.
    nats_roles: dict[str, str] = field(default_factory=dict)
    nats_default_role: str = "readonly"

    @classmethod
    def from_settings(cls, settings: Any, curve: bool) -> RolePolicy:
        """The policy for ``settings``; creates the operator token file if absent."""
        key_roles: dict[str, str] = {}
        for role in ("readonly", "trader", "operator"):  # highest listed wins
            for entry in getattr(settings, f"curve_{role}_keys", None) or ():
                try:
                    key = parse_key_or_file(entry, f"curve_{role}_keys entry").decode()
                except KeyFileError as exc:
                    raise ConfigError(str(exc)) from None
                key_roles[key] = role
        if key_roles and not curve:
            log.warning("curve_*_keys are set but CURVE is off: they grant nothing")
        path = Path(settings.operator_token_path)
        return cls(
            curve=curve,
            local_role=str(getattr(settings, "local_role", "trader")),
            curve_default_role=str(getattr(settings, "curve_default_role", "trader")),
            key_roles=key_roles,
            operator_token=ensure_operator_token(path),
            token_path=path,
            nats_roles=dict(getattr(settings, "nats_roles", None) or {}),
            nats_default_role=str(getattr(settings, "nats_default_role", "readonly")),
        )

    def is_operator_token(self, credential: str) -> bool:
        """True when ``credential`` is the local operator token (never with CURVE on)."""
        return bool(not self.curve and credential and self.operator_token
                    and hmac.compare_digest(credential.encode(), self.operator_token.encode()))

    def grant(self, requested: str, peer: Peer, credential: str = "") -> str:
        """The role for a Hello asking for ``requested``; :class:`RoleRefused` if above
        what ``peer`` (and ``credential``) is granted."""
        if requested == "readonly":
            return requested
        if peer.key.startswith(NATS_PEER):  # authenticated by the NATS server
            user = peer.key[len(NATS_PEER):]
            granted = self.nats_roles.get(user, self.nats_default_role)
            if ROLE_RANK.get(requested, 99) <= ROLE_RANK[granted]:
                return requested
            raise RoleRefused(
                f"role {requested!r} is not granted to NATS user {user!r} (it has "
                f"{granted!r}); the hub's operator grants it in [nats_roles] "
                "(docs/scale-out.md)"
            )
        if self.curve:
            granted = self.key_roles.get(peer.key, self.curve_default_role)
            if ROLE_RANK.get(requested, 99) <= ROLE_RANK[granted]:
                return requested
            listing = "curve_operator_keys" if requested == "operator" else "curve_trader_keys"
            raise RoleRefused(
                f"role {requested!r} is not granted to CURVE key {peer.key or '?'} (it has "
                f"{granted!r}); the hub's operator grants it by listing the key in "
                f"{listing} (docs/security.md)"
            )
        if requested == "operator":
            if self.is_operator_token(credential):
                return requested
            where = self.token_path or "DATA_DIR/operator.token"
            why = "a wrong operator token" if credential else "no proof"
            raise RoleRefused(
                f"role 'operator' refused: {why}. Operators prove it with the token in {where} "
                "(readable only by the hub's user): the SDK (role='operator') and the ibhub "
                "tools read it when run as that user (or set IBHUB_OPERATOR_TOKEN_FILE); "
                "see docs/security.md"
            )
        if ROLE_RANK.get(requested, 99) <= ROLE_RANK[self.local_role]:
            return requested
        raise RoleRefused(
            f"role {requested!r} is not granted to local clients on this hub (local_role = "
            f"{self.local_role!r}); ask for 'readonly', or have the hub's operator change "
            "local_role (docs/security.md)"
        )
