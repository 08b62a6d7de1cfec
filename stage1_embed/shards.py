"""The plan that the shards of one sharded stage 1 run share: they must agree on what they compute.

Shards (``--num-shards N --shard-index i``, e.g. a SLURM array) write disjoint chunks into one
output folder. A shard started with another backbone list, input size, shard count or input would
write parts nobody assembles, or wait forever: the first shard records the plan in
``embeddings/.parts/shard-plan.json``, every later shard compares and refuses to join on a
difference. The shard that assembles the last backbone removes the plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from .common import atomic_write_text
from .errors import ConfigError
from .schema import EMBEDDINGS_DIR

PLAN_FILE = "shard-plan.json"


class ShardPlan:
    """Read-compare-write of the plan under a file lock (shards may start at the same instant)."""

    def __init__(self, features_dir: Path) -> None:
        self.path = Path(features_dir) / EMBEDDINGS_DIR / ".parts" / PLAN_FILE
        self._lock = FileLock(str(self.path) + ".lock")

    def join(self, shard_index: int, facts: dict[str, Any]) -> None:
        """Add ``facts`` to the plan, or raise ConfigError if the plan says otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            plan = json.loads(self.path.read_text()) if self.path.is_file() else {}
            differs = {k: (plan[k], v) for k, v in facts.items() if k in plan and plan[k] != v}
            if differs:
                listed = "; ".join(f"{k}: the other shards use {a!r}, this one {b!r}"
                                   for k, (a, b) in differs.items())  # fmt: skip
                raise ConfigError(
                    f"Shard {shard_index} cannot join the sharded run in {self.path.parents[2]}: "
                    f"{listed}. Start every shard with the same python -m stage1_embed command except --shard-index. To "
                    f"start over with new settings, let the running shards finish or stop them, then "
                    f"delete {self.path}."
                )
            atomic_write_text(self.path, json.dumps({**plan, **facts}, indent=2, sort_keys=True))

    def finish(self) -> None:
        """Every backbone is assembled: the next sharded run may use other settings."""
        with self._lock:
            self.path.unlink(missing_ok=True)
