"""The data check at full competition scale: 33,246 distinct JPEG files (the 1,847 shared
512x512 images 18 times, each copy made distinct by a trailing byte after the JPEG's end
marker, which decoders ignore), timed beside stage 1's own cost.

    .venv/bin/python benchmarks/data_check_scale.py --work /tmp/melanoma-check-scale
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, machine, require_shared
from stage1_embed.check import run_check
from stage1_embed.config import Stage1Config

COPIES = 18


def distinct_copies(root: Path) -> Path:
    """A Kaggle-layout folder of COPIES distinct copies of each shared JPEG (made once)."""
    folder = root / "jpeg" / "train"
    if (root / "train.csv").is_file():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(ISIC / "csv" / "train.csv").set_index("image_name")
    rows = []
    for path in sorted(require_shared(ISIC / "jpeg" / "train_512").glob("*.jpg")):
        data = path.read_bytes()
        for copy in range(COPIES):
            name = f"{path.stem}_c{copy}"
            (folder / f"{name}.jpg").write_bytes(data + bytes([copy]))
            row = train.loc[path.stem].to_dict()
            rows.append({"image_name": name, **row, "patient_id": f"{row['patient_id']}_c{copy}"})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-check-scale"))
    args = parser.parse_args()
    data = distinct_copies(args.work / "data")
    print(f"machine: {machine()}")
    for run in ("first (hashes every file)", "again (digests remembered)"):
        started = time.perf_counter()
        result = run_check(Stage1Config(data_dir=data, out_dir=args.work / "out"))
        print(f"| {run} | {result['n_images']} | {time.perf_counter() - started:.1f} s |")


if __name__ == "__main__":
    main()
