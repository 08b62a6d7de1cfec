"""``python -m stage2_boost``: a warm stage 2 server runs the command when one fits this
environment (server/), otherwise this process does (cli.py)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["server"]:
        from .server.cli import main as server_main

        return server_main(argv[1:])
    from .server import client

    environ = dict(os.environ)  # before the imports below add variables of their own
    try:
        code = client.run_through_server(argv)
        if code is not None:
            return code
        start = client.should_start(argv)
    except ValueError as err:  # a malformed MELANOMA_STAGE2_SERVER
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .cli import main as run_here

    code = run_here(argv)
    if code == 0 and start:
        client.start_in_background(environ)
    return code


if __name__ == "__main__":
    sys.exit(main())
