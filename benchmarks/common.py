"""Helpers shared by the benchmarks: locating ../shared and building Kaggle-layout folders."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MELANOMA_SHARED_DIR", REPO.parent / "shared"))
ISIC = SHARED / "data" / "isic2020"
HAM = SHARED / "data" / "ham10000_half"
WEIGHTS = SHARED / "weights"


def require_shared(path: Path) -> Path:
    if not path.exists():
        raise SystemExit(
            f"this benchmark needs {path} (the shared data folder beside the repository)"
        )
    return path


def isic_jpeg_layout(root: Path, copies: int = 1, limit: int | None = None) -> Path:
    """A Kaggle-layout folder of the shared 512x512 JPEGs (symlinks), repeated ``copies`` times
    under distinct names (to test how memory grows with the dataset)."""
    source = require_shared(ISIC / "jpeg" / "train_512")
    train = pd.read_csv(ISIC / "csv" / "train.csv").set_index("image_name")
    folder = root / "jpeg" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    paths = sorted(source.glob("*.jpg"))[:limit]
    for copy in range(copies):
        for path in paths:
            name = path.stem if copy == 0 else f"{path.stem}_c{copy}"
            link = folder / f"{name}.jpg"
            if not link.exists():
                link.symlink_to(path)
            row = train.loc[path.stem].to_dict()
            rows.append({"image_name": name, **row, "patient_id": f"{row['patient_id']}_c{copy}"})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"
