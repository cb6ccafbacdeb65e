"""The SDK's script-name secrets: one random secret per name, in a file only its user reads.

The hub binds a script name to the first secret that says hello with it (trust on
first use; docs/security.md, "Script names"), so a script that restarts under the
same name must send the same secret. The SDK keeps it in
``$IBHUB_NAMES_DIR/<name>``, else ``$XDG_STATE_HOME/ibhub/names/<name>``, else
``~/.local/state/ibhub/names/<name>``: the directory ``0700``, the file ``0600``,
created with ``O_EXCL`` on first use (never briefly readable by others, and two
scripts starting at once under one name end with the same secret). A secret file
other users can read is refused (they could act as the script).

A script that does not choose a name gets ``prog[pid-tag]``, which no later run reuses:
its secret lives in memory only, and no file is written.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote

from ibhub.keys import PrivateFileError, ensure_private_secret

SECRET_BYTES = 32
MAX_FILE_NAME = 200


class NameSecretError(ValueError):
    """The name's secret file cannot be used; the message says why and what to do."""


def names_dir(directory: str | Path | None = None) -> Path:
    """Where the secrets live: the argument, ``$IBHUB_NAMES_DIR``, ``$XDG_STATE_HOME``
    or ``~/.local/state``."""
    if directory is not None:
        return Path(directory).expanduser()
    env = os.environ.get("IBHUB_NAMES_DIR")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state).expanduser() if state else Path.home() / ".local" / "state"
    return base / "ibhub" / "names"


def secret_path(name: str, directory: str | Path | None = None) -> Path:
    """The file of ``name``'s secret (the name percent-encoded: any name is one file)."""
    file_name = quote(name, safe="-_.[]@+=,")
    if file_name.startswith("."):
        file_name = "%2E" + file_name[1:]
    return names_dir(directory) / file_name[:MAX_FILE_NAME]


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def load_name_secret(name: str, directory: str | Path | None = None) -> str:
    """``name``'s secret, created (0600) on first use; :class:`NameSecretError` if the
    file is readable by others, belongs to another user or is not a secret."""
    path = secret_path(name, directory)
    try:
        return ensure_private_secret(path, new_secret)
    except PrivateFileError as err:
        what = f"the secret of script name {name!r}"
        if err.kind == "create":
            msg = (f"cannot create {what} in {path.parent}: {err.cause}; set IBHUB_NAMES_DIR "
                   "or names_dir=")
        elif err.kind == "read":
            msg = f"cannot read {what} ({path}): {err.cause}"
        elif err.kind == "owner":
            msg = f"{path} ({what}) belongs to uid {err.uid}, not to you (uid {os.getuid()})"
        elif err.kind == "exposed":
            msg = (f"{path} ({what}) is accessible by other users (mode {err.mode:o}): "
                   f"whoever reads it can act as this script; `chmod 600 {path}`")
        else:
            msg = (f"{path} holds {err.length} characters, not a secret of 32 or more: "
                   "restore it from a backup, or remove it and have the hub's operator "
                   "forget the name (`ibhub names --forget NAME`)")
        raise NameSecretError(msg) from None
