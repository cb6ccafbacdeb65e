"""``ibhub keys``: CURVE key pairs for a hub reachable from other machines.

``generate`` writes ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in
the zmq.auth format; ``show`` prints public keys (never a secret) so they can be
pasted into ``curve_authorized_keys`` or ``IBHUB_SERVER_KEY``. Setup:
docs/operations.md, "Security / remote clients".
"""

from __future__ import annotations

import socket
from pathlib import Path

import click

from ibhub.keys import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    KeyFileError,
    generate_key_pair,
    load_public_key,
)


@click.group()
def keys() -> None:
    """Create and inspect CURVE key pairs (hub and clients)."""


def _default_name() -> str:
    return socket.gethostname().split(".")[0] or "client"


@keys.command()
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="where to write the files (created 0700 if missing)")
@click.option("--name", default=None,
              help="file name stem: NAME.key and NAME.key_secret [default: this host's name]")
@click.option("--force", is_flag=True, help="replace existing files of that name")
def generate(directory: str, name: str | None, force: bool) -> None:
    """Write a new key pair: NAME.key (public) and NAME.key_secret (private, 0600)."""
    stem = name or _default_name()
    try:
        public_path, secret_path = generate_key_pair(Path(directory), stem, force=force)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write keys in {directory}: {exc}") from None
    public = load_public_key(public_path).decode()
    click.echo(f"public key  {public}")
    click.echo(f"public      {public_path}")
    click.echo(f"secret      {secret_path} (mode 0600: keep it private)")
    click.echo(
        "for the hub: curve_server_secret_key_file = the secret file; give clients the "
        "public key (IBHUB_SERVER_KEY)\n"
        "for a client: copy the public file into the hub's curve_authorized_keys_dir; "
        "the client sets IBHUB_CLIENT_KEY_FILE = the secret file",
        err=True,
    )


@keys.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False),
              help=f"show every {PUBLIC_SUFFIX} file in this directory")
def show(files: tuple[str, ...], directory: str | None) -> None:
    """Print the public key of each key file (a .key or .key_secret; never the secret)."""
    paths = [Path(f) for f in files]
    if directory is not None:
        d = Path(directory)
        if not d.is_dir():
            raise click.ClickException(f"{d} is not a directory")
        paths += sorted(d.glob(f"*{PUBLIC_SUFFIX}"))
    if not paths:
        raise click.UsageError(
            f"name key files ({PUBLIC_SUFFIX} or {SECRET_SUFFIX}) or --dir DIR"
        )
    failed = False
    for path in paths:
        try:
            key = load_public_key(path).decode()
        except KeyFileError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        click.echo(f"{key}  {path}")
    if failed:
        raise SystemExit(1)
