"""The data check at full competition scale: 33,246 distinct JPEG files (the 1,847 shared
512x512 images 18 times, each copy made distinct by a trailing byte after the JPEG's end
marker, which decoders ignore), timed beside stage 1's own cost; then the same-lesion search
alone at the competition's size: the 33,126 rows of the real train.csv (their sex, age and site
form the candidate blocks), random unit vectors in place of embeddings (so candidates are
mostly different lesions, as in real data), each row showing one of the shared JPEGs.

    .venv/bin/python benchmarks/data_check_scale.py --work /tmp/melanoma-check-scale
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from benchmarks.common import ISIC, machine, require_shared
from stage1_embed.check import run_check
from stage1_embed.config import Stage1Config
from stage1_embed.same_lesion import SIDE, candidate_pairs, same_lesion_pairs

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
    same_lesion_cost()


def same_lesion_cost() -> None:
    """Time the same-lesion search on the competition's metadata (see the module docstring)."""
    frame = pd.read_csv(ISIC / "csv" / "train.csv")
    vectors = np.random.default_rng(0).standard_normal((len(frame), 1280)).astype(np.float32)
    jpegs = sorted((ISIC / "jpeg" / "train_512").glob("*.jpg"))
    started = time.perf_counter()
    n_pairs = len(candidate_pairs(frame, vectors))
    found = same_lesion_pairs(frame, vectors, lambda row: _draft(jpegs[row % len(jpegs)]))
    print(f"| same-lesion search | {len(frame)} | {time.perf_counter() - started:.1f} s "
          f"({n_pairs} candidate pairs, {len(found)} found) |")  # fmt: skip


def _draft(path: Path) -> Image.Image:
    """Decoded as the check decodes (JPEG draft mode: about SIDE pixels, not all 512)."""
    image = Image.open(path)
    image.draft("RGB", (SIDE, SIDE))
    return image


if __name__ == "__main__":
    main()
