"""The SDK's side of CURVE: connecting to a hub that only accepts known client keys.

A hub bound to a non-loopback address runs both of its sockets as CURVE servers
(docs/operations.md, "Security / remote clients"). A client then needs the hub's
public key and its own key pair, whose public half is on the hub's allow-list.
Both come from arguments or the environment: ``IBHUB_SERVER_KEY`` (the Z85 text or
a file holding it) and ``IBHUB_CLIENT_KEY_FILE`` (a ``.key_secret`` file written by
``ibhub keys generate``). Neither set means a plain connection, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq

from ibhub.curve_keys import KeyFileError, load_secret_key_file, parse_key_or_file

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

    Raises :class:`~ibhub.curve_keys.KeyFileError` naming what is wrong, including
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
