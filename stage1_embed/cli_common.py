"""What both stages' command lines share: logging set-up and turning user errors into exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .errors import MelanomaStackError


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_cli(main: Callable[[], int]) -> int:
    """Run ``main``; a MelanomaStackError becomes one paragraph on stderr and a non-zero exit."""
    try:
        return main()
    except MelanomaStackError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is kept; rerun the same command to resume.", file=sys.stderr
        )
        return 130
