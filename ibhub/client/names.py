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
import stat
from pathlib import Path
from urllib.parse import quote

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
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise NameSecretError(
            f"cannot create the secret of script name {name!r} in "
            f"{path.parent}: {exc}; set IBHUB_NAMES_DIR or names_dir="
        ) from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(new_secret() + "\n")
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NameSecretError(
            f"cannot read the secret of script name {name!r} ({path}): {exc}"
        ) from None
    if st.st_uid != os.getuid():
        raise NameSecretError(
            f"{path} (the secret of script name {name!r}) belongs to uid "
            f"{st.st_uid}, not to you (uid {os.getuid()})"
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise NameSecretError(
            f"{path} (the secret of script name {name!r}) is accessible by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}): whoever reads it can act as this script; "
            f"`chmod 600 {path}`"
        )
    if len(text) < 32:
        raise NameSecretError(
            f"{path} holds {len(text)} characters, not a secret of 32 or more: restore it "
            "from a backup, or remove it and have the hub's operator forget the name "
            "(`ibhub names --forget NAME`)"
        )
    return text
