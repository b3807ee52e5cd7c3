"""Entry point of the `conveyor` command-line client.

The commands need the `cli` extra (click and rich); without it the entry
point says how to install it instead of failing on an import.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

_CLI_MODULES = frozenset({"click", "rich"})
MISSING_EXTRA = "the conveyor CLI needs: pip install 'conveyor[cli]'"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the `conveyor` command line; exits with the command's status."""
    try:
        from conveyor._cli_commands import cli
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in _CLI_MODULES:
            raise
        print(MISSING_EXTRA, file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli.main(args=list(argv) if argv is not None else None, prog_name="conveyor")


if __name__ == "__main__":
    main()
