"""The SDK's side of CURVE: connecting to a hub that only accepts known client keys.

A hub bound to a non-loopback address runs both of its sockets as CURVE servers
(docs/operations.md, "Security / remote clients"). A client then needs the hub's
public key and its own key pair, whose public half is on the hub's allow-list.
Both come from arguments or the environment: ``IBHUB_SERVER_KEY`` (the Z85 text or
a file holding it) and ``IBHUB_CLIENT_KEY_FILE`` (a ``.key_secret`` file written by
``ibhub keys generate``). Neither set means a plain connection, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ibhub.keys import KeyFileError, load_secret_key_file, parse_key_or_file

log = logging.getLogger(__name__)

ENV_SERVER_KEY: Final = "IBHUB_SERVER_KEY"
ENV_CLIENT_KEY_FILE: Final = "IBHUB_CLIENT_KEY_FILE"


@dataclass(frozen=True, repr=False)
class ClientCurve:
    """The keys a client socket presents to a CURVE hub (Z85 bytes)."""

    server_key: bytes
    public_key: bytes
    secret_key: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"ClientCurve(server={self.server_key.decode()}, client={self.public_key.decode()})"

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client; call before ``connect``."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)


def client_curve(
    server_key: str | bytes | None = None,
    client_key_file: str | Path | None = None,
) -> ClientCurve | None:
    """The client's CURVE keys from the arguments, else the environment; None = plain.

    Raises :class:`~ibhub.keys.KeyFileError` naming what is wrong, including
    when only one of the two is given (a CURVE hub needs both; a plain hub neither).
    """
    if server_key is None:
        server_key = os.environ.get(ENV_SERVER_KEY) or None
    if client_key_file is None:
        client_key_file = os.environ.get(ENV_CLIENT_KEY_FILE) or None
    if server_key is None and client_key_file is None:
        return None
    if server_key is None or client_key_file is None:
        missing = "server_key / $IBHUB_SERVER_KEY" if server_key is None \
            else "client_key_file / $IBHUB_CLIENT_KEY_FILE"
        raise KeyFileError(
            f"CURVE needs both the hub's public key and this client's key file; {missing} "
            "is not set"
        )
    text = server_key.decode("ascii", "replace") if isinstance(server_key, bytes) else server_key
    server = parse_key_or_file(text, "hub public key (server_key / $IBHUB_SERVER_KEY)")
    public, secret = load_secret_key_file(client_key_file)
    return ClientCurve(server_key=server, public_key=public, secret_key=secret)


_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class HandshakeWatch:
    """Turns a CURVE client socket's silent failures into a sentence for timeouts.

    A refused CURVE client sees nothing at all: ZeroMQ drops the connection inside
    the handshake, so a request just times out. This watches the socket's monitor
    and keeps the reason: the hub refused the key (ZAP status 400; libzmq then does
    not reconnect, so the client must be restarted once its key is listed), or the
    handshake failed (a wrong server key, or a hub without CURVE).
    """

    def __init__(self, sock: zmq.asyncio.Socket, curve: ClientCurve) -> None:
        self.failure: str | None = None
        self._curve = curve
        self._sock = sock
        self._monitor = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        self._task = asyncio.get_running_loop().create_task(
            self._watch(), name="ibhub-curve-handshake"
        )

    async def _watch(self) -> None:
        while True:
            frames = await self._monitor.recv_multipart()
            try:
                event = parse_monitor_message(frames)
            except (ValueError, IndexError):
                continue
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.failure = None
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.failure = (
                    f"the hub refused this client's CURVE key {self._curve.public_key.decode()} "
                    f"(ZAP status {value}): it is not on the hub's allow-list; add the client's "
                    ".key file to curve_authorized_keys_dir (or the key to "
                    "curve_authorized_keys) and reconnect"
                )
                log.warning("%s", self.failure)
            else:
                self.failure = (
                    "the CURVE handshake with the hub failed: check server_key / "
                    "IBHUB_SERVER_KEY is the hub's public key (`ibhub keys show hub.key`) and "
                    "that the hub runs CURVE"
                )
                log.info("%s", self.failure)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)
