"""External labelled datasets (``--extra-data``): detect the layout, normalise to the primary table.

An extra dataset only ever adds training rows: stage 1 embeds its images into
``OUT/extra/<name>/`` with the same backbones and cache rules as the primary data, and stage 2
puts its rows into the training part of every fold, never into a validation fold.

Two layouts are read:

- the Kaggle layout (``train.csv`` + images, e.g. the HAM10000 half), and
- the ISIC 2019 layout: ``ISIC_2019_Training_GroundTruth.csv`` (one-hot diagnoses),
  ``ISIC_2019_Training_Metadata.csv`` and the images in ``ISIC_2019_Training_Input/``.

Normalised rows: target = melanoma, anatomic sites mapped onto the 2020 categories, and
``patient_id`` = ``<source>:<lesion or patient id>`` (the image name when there is none), so that
no lesion straddles an inner split and no id collides with another source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import ConfigError, DataError
from .metadata import _rows, normalise_table, read_split_csv
from .schema import source_name

logger = logging.getLogger(__name__)

NORMALISED_CSV = "extra_train.csv"  # the normalised rows stage 1 embedded, beside its manifest
ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_IMAGES = "ISIC_2019_Training_Input"
ISIC2019_DIAGNOSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
# ISIC 2019 sites -> SIIM-ISIC 2020 categories (listed in the README).
SITE_MAP = {
    "anterior torso": "torso",
    "posterior torso": "torso",
    "lateral torso": "torso",
    "torso": "torso",
    "head/neck": "head/neck",
    "upper extremity": "upper extremity",
    "lower extremity": "lower extremity",
    "palms/soles": "palms/soles",
    "oral/genital": "oral/genital",
}
_LISTED = 10


@dataclass(frozen=True)
class ExtraDataset:
    """One ``--extra-data`` folder: its source name, layout, and where its images are."""

    root: Path
    layout: str  # kaggle | isic2019

    @property
    def name(self) -> str:
        return source_name(self.root)

    @property
    def images_dir(self) -> Path | None:
        """The image folder to read (None: find it in the Kaggle layout)."""
        if self.layout != "isic2019":
            return None
        folder = self.root / ISIC2019_IMAGES
        nested = folder / ISIC2019_IMAGES  # the archive unzipped into a folder of its own name
        return nested if nested.is_dir() else folder


def detect_extra(root: Path) -> ExtraDataset:
    """The layout of an ``--extra-data`` folder, or a DataError saying what was expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--extra-data {root} is not a folder.")
    if (root / ISIC2019_GROUND_TRUTH).is_file():
        return ExtraDataset(root, "isic2019")
    if (root / "train.csv").is_file():
        return ExtraDataset(root, "kaggle")
    raise DataError(
        f"--extra-data {root}: neither a Kaggle-layout folder (train.csv + images) nor the ISIC "
        f"2019 layout ({ISIC2019_GROUND_TRUTH}, {ISIC2019_METADATA}, {ISIC2019_IMAGES}/)."
    )


def read_extra_table(extra: ExtraDataset) -> pd.DataFrame:
    """The extra dataset's labelled rows in the primary table's normalised form (split 'train')."""
    if extra.layout == "isic2019":
        table = _read_isic2019(extra.root)
    else:
        table = read_split_csv(extra.root / "train.csv", "train")
        table["patient_id"] = extra.name + ":" + table["patient_id"].astype(str)
    sites = table["anatom_site_general_challenge"]
    table["anatom_site_general_challenge"] = sites.map(SITE_MAP).fillna(sites).astype("string")
    table["patient_id"] = table["patient_id"].astype("string")
    return table


def _read_isic2019(root: Path) -> pd.DataFrame:
    truth = _read_csv(root / ISIC2019_GROUND_TRUTH, ("image", "MEL"))
    meta_path = root / ISIC2019_METADATA
    meta = (
        _read_csv(meta_path, ("image",))
        if meta_path.is_file()
        else pd.DataFrame({"image": truth["image"]})
    )
    if not meta_path.is_file():
        logger.warning("%s is absent: age, sex, site and lesion ids will be missing", meta_path)
    onehot = [c for c in ISIC2019_DIAGNOSES if c in truth.columns]
    values = truth[onehot].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | ~values.isin([0, 1, 0.0, 1.0]).all(axis=1)
    if bad.any():
        raise DataError(
            f"{root / ISIC2019_GROUND_TRUTH}: diagnosis columns {onehot} must be 0 or 1, not at "
            f"{_rows(bad)}. Use the official ground-truth file."
        )
    unlabelled = (values.sum(axis=1) == 0) | (values.get("UNK", 0) == 1)
    if unlabelled.any():
        logger.warning(
            "%s: %d row(s) have diagnosis UNK or none (e.g. %s): left out, their melanoma label is "
            "unknown.",
            root / ISIC2019_GROUND_TRUTH,
            int(unlabelled.sum()),
            truth.loc[unlabelled, "image"].head(3).tolist(),
        )
    truth = truth[~unlabelled].assign(target=values.loc[~unlabelled, "MEL"].astype(int))
    merged = truth[["image", "target"]].merge(
        meta.drop(columns=["target", "diagnosis"], errors="ignore"),
        on="image", how="left", validate="1:1",
    ).set_index(truth.index)  # fmt: skip
    missing = pd.Series(pd.NA, index=merged.index, dtype="string")
    lesion = merged.get("lesion_id", missing).astype("string").str.strip().replace("", pd.NA)
    group = lesion.fillna(merged["image"].astype("string"))
    labels = values.loc[~unlabelled]
    raw = pd.DataFrame(
        {
            "image_name": merged["image"],
            "patient_id": source_name(root) + ":" + group,
            "sex": merged.get("sex", missing),
            "age_approx": merged.get("age_approx", missing),
            "anatom_site_general_challenge": merged.get("anatom_site_general", missing),
            "diagnosis": labels.idxmax(axis=1),  # the one-hot column that is set
            "target": merged["target"].astype(str),
        }
    )
    return normalise_table(raw, root / ISIC2019_GROUND_TRUTH, "train").set_axis(
        range(len(raw)), axis=0
    )


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} is missing: the ISIC 2019 layout needs it.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be parsed ({err}). Use the official CSV file.") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; it has {list(table.columns)}.")
    return table


def resolve_duplicates(
    primary: pd.DataFrame, extras: dict[str, pd.DataFrame], drop: bool
) -> dict[str, pd.DataFrame]:
    """Refuse image names found in two sources, or (``drop``) remove them from the extra sets.

    The primary data always keeps its rows; an extra set loses the names seen in the primary data
    or in an earlier extra set (the order of ``--extra-data``)."""
    seen = {name: "the primary data" for name in primary["image_name"]}
    kept: dict[str, pd.DataFrame] = {}
    clashes: list[str] = []
    for source, table in extras.items():
        dup = table["image_name"].isin(seen.keys())
        if dup.any():
            examples = table.loc[dup, "image_name"].head(_LISTED).tolist()
            clashes.append(
                f"{int(dup.sum())} of {source}'s images are also in "
                f"{sorted({seen[n] for n in examples})} (e.g. {examples})"
            )
            if drop:
                logger.warning(
                    "--drop-extra-duplicates: %d image(s) of %s dropped (also in another source)",
                    int(dup.sum()),
                    source,
                )
                table = table[~dup].reset_index(drop=True)
        seen.update({name: source for name in table["image_name"]})
        kept[source] = table
    if clashes and not drop:
        raise DataError(
            "The same image name is in two data sources: "
            + "; ".join(clashes)
            + ". An image must train once and never validate its own copy: pass "
            "--drop-extra-duplicates to drop the copies from the extra sets (the run says how "
            "many), or remove them yourself."
        )
    return kept


def check_unique_sources(roots: Sequence[Path]) -> None:
    """Two extra folders with the same name would share OUT/extra/<name>/."""
    names = [source_name(r) for r in roots]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(
            f"--extra-data folders must have distinct names (their outputs go to extra/<name>/); "
            f"{dup} is used twice. Rename or symlink one of them."
        )
