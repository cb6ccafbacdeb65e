"""``python -m ibhub``: the ``ibhub`` command (same sub-commands and options)."""

from ibhub.cli import main

if __name__ == "__main__":
    main(prog_name="ibhub")
