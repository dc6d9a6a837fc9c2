"""Errors a user can act on. Raised where the fact is known; shown once, at the stage or CLI boundary."""
from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's data, params or environment; the message names the fix."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a UserError becomes one clear message and exit status 1."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
