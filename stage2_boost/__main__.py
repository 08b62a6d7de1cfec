"""``python -m stage2_boost``: see cli.py."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
