"""Progress that suits both a terminal and a log file.

On a terminal: a tqdm bar. Redirected to a file or a pipe: one log line every few seconds
(``<what>: n/total images, x img/s, ETA``) instead of carriage-return updates that pile up into
one huge line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)
LOG_EVERY_SECONDS = 10.0


class LogProgress:
    """The part of tqdm's interface the stages use, as periodic log lines."""

    def __init__(self, total: int, desc: str, every: float = LOG_EVERY_SECONDS) -> None:
        self.total, self.desc, self.every = total, desc, every
        self.n = 0
        self.started = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._log(now)

    def close(self) -> None:
        self._log(time.perf_counter())

    def _log(self, now: float) -> None:
        rate = self.n / max(now - self.started, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        logger.info("%s: %d/%d images, %.1f img/s, %.0f s left", self.desc, self.n, self.total,
                    rate, eta)  # fmt: skip


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on a terminal, log lines elsewhere, nothing when disabled."""
    if not enabled or sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="img", disable=not enabled)
    return LogProgress(total, desc)
