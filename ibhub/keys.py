"""CURVE key pairs and key files, shared by the hub, the SDK and ``ibhub keys``.

Files use the zmq.auth / czmq certificate layout (``NAME.key`` holds the public key,
``NAME.key_secret`` holds both), so ``zmq.auth.load_certificate`` and other ZeroMQ
tools read them too. They are written here rather than with
``zmq.auth.create_certificates`` because that writes the secret file with the
process umask (often world-readable) and overwrites existing files; here the secret
file is created ``0600`` atomically (``O_CREAT | O_EXCL``) and nothing is replaced
unless asked.

Keys travel as Z85 text: 40 characters for a 32-byte key. This module imports
only pyzmq, so the SDK can use it without pulling in the hub's settings machinery.
It also finds the hub's local operator token (:func:`read_operator_token`) for the
SDK and the command-line tools, for the same reason.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
Z85_KEY_LEN = 40


class KeyFileError(ValueError):
    """A key or key file is missing, unreadable or malformed; the message says which."""


def check_z85_key(key: str | bytes, what: str = "key") -> bytes:
    """``key`` as Z85 bytes if it is a well-formed 40-character CURVE key."""
    raw = key.encode("ascii", "replace") if isinstance(key, str) else bytes(key)
    raw = raw.strip()
    if len(raw) != Z85_KEY_LEN:
        raise KeyFileError(
            f"{what} {raw[:60]!r} is not a CURVE key: expected 40 Z85 characters, "
            f"got {len(raw)} (print one with `ibhub keys show FILE`)"
        )
    try:
        z85.decode(raw)
    except (ValueError, KeyError, IndexError):
        raise KeyFileError(f"{what} {raw!r} is not valid Z85 text") from None
    return raw


def _banner(kind: str, name: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"#   ibhub CURVE {kind} certificate {name!r}, generated {now} by `ibhub keys`\n"
        "#   zmq.auth / czmq format: readable by zmq.auth.load_certificate\n\n"
    )


def _write_new(path: Path, text: str, mode: int, force: bool) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if force and path.exists():
        path.unlink()
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; pick another --name or pass --force to replace it"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)  # the umask may have removed bits we want (e.g. 0644 public)


def generate_key_pair(directory: Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) into ``directory``.

    The directory is created ``0700`` if missing. Returns (public file, secret file).
    """
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name (no '/', no leading '.')")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    pub_text, sec_text = public.decode("ascii"), secret.decode("ascii")
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{name}{SECRET_SUFFIX}"
    body = f'metadata\n    name = "{name}"\ncurve\n    public-key = "{pub_text}"\n'
    _write_new(secret_path, _banner("secret", name)
               + "#   Keep this file private: whoever has it can act as this peer.\n\n"
               + body + f'    secret-key = "{sec_text}"\n', 0o600, force)
    _write_new(public_path, _banner("public", name) + body, 0o644, force)
    return public_path, secret_path


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyFileError(
            f"key file {path} does not exist (create one with `ibhub keys generate`)"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise KeyFileError(f"{path} holds no public-key line: not a CURVE key file") from None
    check_z85_key(public, f"public key in {path}")
    if secret is not None:
        check_z85_key(secret, f"secret key in {path}")
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """The public key (Z85) in a ``.key`` or ``.key_secret`` file."""
    return _load(Path(path))[0]


def load_secret_key_file(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file; a public-only file is an error."""
    p = Path(path)
    public, secret = _load(p)
    if secret is None:
        raise KeyFileError(
            f"{p} holds only a public key; give the NAME{SECRET_SUFFIX} file written by "
            "`ibhub keys generate`"
        )
    return public, secret


def secret_file_exposed(path: str | Path) -> bool:
    """True when a secret key file is readable by group or others (as ssh warns)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def public_keys_in(directory: str | Path) -> dict[bytes, Path]:
    """Every public key in ``directory``'s ``*.key`` files (``.key_secret`` files are
    skipped: an allow-list directory should hold public keys only)."""
    d = Path(directory)
    if not d.is_dir():
        raise KeyFileError(f"authorized keys directory {d} does not exist or is not a directory")
    found: dict[bytes, Path] = {}
    for path in sorted(d.glob(f"*{PUBLIC_SUFFIX}")):
        found[load_public_key(path)] = path
    return found


OPERATOR_TOKEN_FILE = "operator.token"
ENV_OPERATOR_TOKEN_FILE = "IBHUB_OPERATOR_TOKEN_FILE"
ENV_DATA_DIR = "IBHUB_DATA_DIR"


def operator_token_path(explicit: str | Path | None = None) -> Path:
    """Where the hub's operator token is looked for: ``explicit``, else
    ``$IBHUB_OPERATOR_TOKEN_FILE``, else ``operator.token`` in ``$IBHUB_DATA_DIR`` or
    the hub's default data dir (``~/.local/share/ibhub``)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_OPERATOR_TOKEN_FILE)
    if env:
        return Path(env).expanduser()
    data_dir = os.environ.get(ENV_DATA_DIR)
    base = Path(data_dir).expanduser() if data_dir else Path.home() / ".local" / "share" / "ibhub"
    return base / OPERATOR_TOKEN_FILE


class PrivateFileError(Exception):
    """A private secret file that cannot be trusted. ``kind`` says why: "create" and
    "read" (``cause`` is the OSError), "owner" (``uid`` owns it), "exposed" (``mode``
    lets others in) or "short" (``length`` characters). Callers word the message."""

    def __init__(self, kind: str, path: Path, *, cause: Exception | None = None,
                 uid: int = 0, mode: int = 0, length: int = 0) -> None:
        super().__init__(f"{path}: {kind}")
        self.kind, self.path, self.cause = kind, path, cause
        self.uid, self.mode, self.length = uid, mode, length


def ensure_private_secret(path: Path, make: Callable[[], str], *, min_chars: int = 32) -> str:
    """The secret in ``path``, created ``0600`` (directory ``0700``) from ``make()`` when
    absent, with ``O_EXCL`` so it is never briefly readable by others and two processes
    racing keep one secret. Raises :class:`PrivateFileError` when the file belongs to
    another user, is open to group or others, or holds fewer than ``min_chars``."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PrivateFileError("create", path, cause=exc) from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(make() + "\n")
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PrivateFileError("read", path, cause=exc) from None
    if st.st_uid != os.getuid():
        raise PrivateFileError("owner", path, uid=st.st_uid)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PrivateFileError("exposed", path, mode=stat.S_IMODE(st.st_mode))
    if len(text) < min_chars:
        raise PrivateFileError("short", path, length=len(text))
    return text


def read_operator_token(path: str | Path | None = None) -> str | None:
    """The operator token (see :func:`operator_token_path`), or None when the file is
    missing or this user cannot read it (then the hub refuses role="operator" with a
    message saying how to get it)."""
    try:
        return operator_token_path(path).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def parse_key_or_file(value: str, what: str) -> bytes:
    """A Z85 public key given inline, or read from a key file named by ``value``."""
    text = value.strip()
    if len(text) == Z85_KEY_LEN and not Path(text).exists():
        return check_z85_key(text, what)
    path = Path(text).expanduser()
    if path.is_file():
        return load_public_key(path)
    raise KeyFileError(
        f"{what} {text[:60]!r} is neither a 40-character Z85 key nor an existing key file"
    )
