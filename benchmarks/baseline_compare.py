"""This tree beside another commit's, in one run: the CLI's start-up and the demo end to end.

    git worktree add /tmp/melanoma-base a199a58
    .venv/bin/python benchmarks/baseline_compare.py --baseline /tmp/melanoma-base [--repeats 7]

The baseline tree runs with this tree's ``.venv`` (linked into it, with the install stamp its
pyproject expects, so nothing is reinstalled; ``python -m`` imports each tree's own packages
from its folder). Each CLI command is a fresh process (median of ``--repeats``); the demo is
``./run_all.sh --out <fresh folder>`` in each tree, twice, alternating (the first run of a tree
also generates its ``data/demo``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine

COMMANDS = (["--help"], ["runs", "--help"], ["inspect", "--help"])


def link_venv(tree: Path) -> None:
    venv = tree / ".venv"
    if not venv.exists():
        venv.symlink_to(REPO / ".venv")
    stamp = hashlib.sha256((tree / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (REPO / ".venv" / f".installed-{stamp}").touch()


def seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a worktree of the baseline")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-demo", action="store_true")
    args = parser.parse_args()
    base = args.baseline.resolve()
    link_venv(base)
    python = str(REPO / ".venv" / "bin" / "python")
    base_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=base, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip
    print(f"machine: {machine()}; baseline {base_rev}")
    print("| command | baseline | this tree | ratio |")
    print("| --- | --- | --- | --- |")
    for command in COMMANDS:
        timings: dict[Path, list[float]] = {base: [], REPO: []}
        for _ in range(args.repeats):
            for tree in (base, REPO):
                timings[tree].append(seconds([python, "-m", "stage2_boost", *command], tree))
        old, new = (statistics.median(timings[t]) for t in (base, REPO))
        print(f"| `python -m stage2_boost {' '.join(command)}` | {old:.2f} s | {new:.2f} s | "
              f"{new / old:.2f}x |")  # fmt: skip
    if args.no_demo:
        return
    work = Path(tempfile.mkdtemp(prefix="melanoma-demo-"))
    demo: dict[Path, list[float]] = {base: [], REPO: []}
    for round_ in range(2):
        for tree in (base, REPO) if round_ == 0 else (REPO, base):
            out = work / f"{tree.name}-{round_}"
            demo[tree].append(seconds(["./run_all.sh", "--out", str(out)], tree))
    shutil.rmtree(work, ignore_errors=True)
    for label, tree in (("baseline", base), ("this tree", REPO)):
        print(f"| demo `./run_all.sh`, {label} | {' / '.join(f'{s:.0f} s' for s in demo[tree])} |")


if __name__ == "__main__":
    main()
