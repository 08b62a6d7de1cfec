"""Stage 1 for scoring with a saved model (``--model DIR``): the model's backbones with the model's
exact preprocessing, its weights checked by sha256, and datasets without a train.csv or any CSV.

Stage 1 checks the whole model folder (``model.json``'s own digest and every file's sha256) before
it embeds anything, then reads the ``backbones`` part; stage 2 checks it again before it scores.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .common import folder_integrity_problem
from .errors import ConfigError, DataError, WeightsError
from .metadata import read_split_csv
from .sources.jpeg import EXTENSIONS

logger = logging.getLogger(__name__)
MODEL_MANIFEST = "model.json"
_BARE_EXTENSIONS = EXTENSIONS  # a bare folder holds JPEG/PNG files (DICOM needs a CSV)


@dataclass(frozen=True)
class ModelBackbone:
    """One backbone as the model was trained with it."""

    spec: str
    slug: str
    preprocessing: dict[str, Any]
    tta: tuple[str, ...]
    precision: str
    chunk_size: int
    sha256: str | None
    location: str | None
    natural_colours: bool = True  # False: a model from before colour order was checked

    @property
    def input_size(self) -> int:
        return int(self.preprocessing["input_size"][-1])


def model_backbones(model_dir: Path) -> list[ModelBackbone]:
    """The backbones a saved model needs, from its ``model.json``."""
    path = Path(model_dir) / MODEL_MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"--model {model_dir} is not a model folder (no {MODEL_MANIFEST}); pass the "
            "OUT/stage2/model folder of a training run."
        )
    try:
        manifest = json.loads(path.read_text())
        backbones = manifest["backbones"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is damaged ({err}). Copy the model folder again.") from None
    problem = folder_integrity_problem(Path(model_dir), manifest, MODEL_MANIFEST)
    if problem is not None:
        raise ConfigError(
            f"--model {model_dir}: {problem}. Copy the whole model folder again or retrain; a "
            "changed model would give wrong probabilities (nothing was embedded)."
        )
    return [
        ModelBackbone(p["backbone_spec"], slug, p["preprocessing"], tuple(p.get("tta_views") or ()),
                      p.get("precision") or "fp32", int(p.get("chunk_size") or 1024),
                      (p.get("weights") or {}).get("sha256"), (p.get("weights") or {}).get("location"),
                      "channel_order" in p)
        for slug, p in backbones.items()
    ]  # fmt: skip


def check_same_backbone(
    expected: ModelBackbone, weights_sha256: str | None, preprocessing: Any
) -> None:
    """Refuse other weights or preprocessing than the model was trained with."""
    if expected.sha256 and weights_sha256 != expected.sha256:
        raise WeightsError(
            f"Backbone {expected.slug}: the model was trained with weights of sha256 "
            f"{expected.sha256[:16]}... (from {expected.location}); the weights found now have "
            f"sha256 {str(weights_sha256)[:16]}.... Put the model's weight file at {expected.location}, "
            "or pass --weights-dir with a folder holding it."
        )
    if preprocessing != expected.preprocessing:
        raise ConfigError(
            f"Backbone {expected.slug}: its preprocessing here {preprocessing} differs from the "
            f"model's {expected.preprocessing}; timm may have changed its defaults. Install the "
            "timm version recorded in the model."
        )


def weights_missing(expected: ModelBackbone, err: WeightsError) -> WeightsError:
    return WeightsError(
        f"The model needs backbone {expected.spec!r} with weights of sha256 "
        f"{str(expected.sha256)[:16]}... (it was trained with {expected.location}), and they "
        f"cannot be loaded: {err}"
    )


def load_scoring_metadata(
    train_csv: Path | None, test_csv: Path | None, data_dir: Path, images_dir: Path | None
) -> tuple[pd.DataFrame, list[str] | None]:
    """The rows to embed for scoring, and for a folder with no CSV the notes on the files it left
    out (None: the rows came from a CSV).

    A train.csv is optional; with no CSV at all, every image file of the folder is a test row
    with missing metadata and its own patient (patient ids made from image names)."""
    frames = []
    if train_csv is not None and Path(train_csv).is_file():
        frames.append(read_split_csv(train_csv, "train"))
    if test_csv is not None and Path(test_csv).is_file():
        frames.append(read_split_csv(test_csv, "test"))
    if frames:
        return pd.concat(frames, ignore_index=True), None
    names, notes = bare_image_names(images_dir or data_dir)
    table = pd.DataFrame({"image_name": names, "patient_id": names})
    for column in ("sex", "anatom_site_general_challenge", "diagnosis"):
        table[column] = pd.Series(pd.NA, index=table.index, dtype="string")
    table["age_approx"] = pd.Series(pd.NA, index=table.index, dtype="Float64")
    table["target"] = pd.Series(pd.NA, index=table.index, dtype="Int8")
    table["split"] = "test"
    logger.warning("no CSV in %s: scoring its %d JPEG/PNG file(s), each as its own patient, with "
                   "missing age, sex and site", data_dir, len(table))  # fmt: skip
    for note in notes:
        logger.warning("%s", note)
    return table, notes


def bare_image_names(folder: Path) -> tuple[list[str], list[str]]:
    """One name per JPEG/PNG file of a folder with no CSV (directly inside it, or in the Kaggle
    places for test images: jpeg/test/, test/), and a note on every file left out.

    A file is named by its stem; files sharing a stem (Z.jpg, Z.png) are each named by their full
    file name instead, so none is dropped. Images in subfolders and other files are not scored,
    and the notes say how many, which, and why."""
    for candidate in (folder, folder / "jpeg" / "test", folder / "test"):
        if candidate.is_dir():
            files = sorted(p for p in candidate.iterdir() if p.is_file())
            images = [p for p in files if p.suffix.lower() in _BARE_EXTENSIONS]
            if images:
                return _bare_names(candidate, files, images)
    raise DataError(
        f"No train.csv, test.csv or image files ({', '.join(_BARE_EXTENSIONS)}, any letter case) "
        f"in {folder}. Put the images directly in the folder, or add a test.csv."
    )


def _bare_names(folder: Path, files: list[Path], images: list[Path]) -> tuple[list[str], list[str]]:
    stems = Counter(p.stem for p in images)
    names = [p.stem if stems[p.stem] == 1 else p.name for p in images]
    notes = []
    shared = sorted(stem for stem, count in stems.items() if count > 1)
    if shared:
        example = ", ".join(p.name for p in images if p.stem == shared[0])
        notes.append(f"{len(shared)} name(s) are shared by several image files (e.g. {example}): "
                     "each of those is scored under its full file name")  # fmt: skip
    others = [p.name for p in files if p.suffix.lower() not in _BARE_EXTENSIONS]
    if others:
        notes.append(f"skipped {len(others)} file(s) that are not JPEG/PNG ({_few(others)}); "
                     "DICOM files need a test.csv naming them")  # fmt: skip
    nested = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*"))
              if p.is_file() and p.parent != folder and p.suffix.lower() in _BARE_EXTENSIONS]  # fmt: skip
    if nested:
        notes.append(f"skipped {len(nested)} image file(s) in subfolders ({_few(nested)}): only "
                     "the folder's own files are scored; score a subfolder with its own --data")  # fmt: skip
    return names, notes


def _few(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
