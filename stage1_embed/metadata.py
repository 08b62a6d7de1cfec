"""Read the competition CSVs into one normalised, typed metadata table.

The CSV is the source of truth for metadata. Missing sex, age and site stay missing; unknown
categorical values are kept as their own level with a warning; anything that cannot be interpreted
is refused with the CSV line numbers that are wrong.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from .errors import DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
META_COLUMNS = ("sex", "age_approx", "anatom_site_general_challenge")
KNOWN_SEXES = frozenset({"male", "female"})
KNOWN_SITES = frozenset(
    {
        "head/neck",
        "upper extremity",
        "lower extremity",
        "torso",
        "anterior torso",
        "posterior torso",
        "lateral torso",
        "palms/soles",
        "oral/genital",
    }
)
COLUMN_ALIASES = {"anatom_site_general": "anatom_site_general_challenge"}
# A plain file stem: no separators, no leading dot, so it can never leave the image folder.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_AGE = 130
_EXAMPLES = 5


def required_columns(split: str) -> tuple[str, ...]:
    """Columns a CSV of ``split`` must have (sex, age and site are optional: absent, missing)."""
    base = ("image_name", "patient_id")
    return (*base, "target") if split == "train" else base


def load_metadata(train_csv: Path, test_csv: Path | None = None) -> pd.DataFrame:
    """Read and validate train (and optional test) CSVs into one table with a ``split`` column."""
    frames = [read_split_csv(train_csv, "train")]
    if test_csv is not None:
        frames.append(read_split_csv(test_csv, "test"))
    table = pd.concat(frames, ignore_index=True)
    _warn_train_test_overlap(table)
    return table


def read_split_csv(path: Path, split: str) -> pd.DataFrame:
    """Read one CSV of ``split`` ('train' or 'test') and normalise it."""
    return normalise_table(_read_raw(Path(path), split), Path(path), split)


def normalise_table(raw: pd.DataFrame, path: Path, split: str) -> pd.DataFrame:
    """Validate and type a table of CSV strings (``path`` names its origin in messages)."""
    raw = raw.rename(columns={k: v for k, v in COLUMN_ALIASES.items() if k in raw.columns})
    _check_columns(raw, path, split)
    absent = [c for c in META_COLUMNS if c not in raw.columns]
    if absent:
        logger.warning("%s has no %s column: missing for every row, as an empty cell would be",
                       path, " / ".join(absent))  # fmt: skip
        raw = raw.assign(**{c: pd.Series(pd.NA, index=raw.index, dtype="string") for c in absent})
    table = pd.DataFrame(
        {
            "image_name": _image_names(raw, path),
            "patient_id": _patient_ids(raw, path),
            "sex": _categorical(raw["sex"], KNOWN_SEXES, "sex", path),
            "age_approx": _ages(raw, path),
            "anatom_site_general_challenge": _categorical(
                raw["anatom_site_general_challenge"], KNOWN_SITES, "anatomic site", path
            ),
            "diagnosis": raw["diagnosis"].str.strip() if "diagnosis" in raw else pd.NA,
            "target": _targets(raw, path) if split == "train" else pd.NA,
            "split": split,
        }
    )
    table["diagnosis"] = table["diagnosis"].astype("string")
    table["target"] = table["target"].astype("Int8")
    return table


_OPTIONAL = ", or delete test.csv (a test split is optional)"


def _read_raw(path: Path, split: str = "train") -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            f"CSV file not found: {path}. Put train.csv (and optionally test.csv) in the data "
            "folder, or pass the paths (python -m stage1_embed --train-csv / --test-csv)."
        )
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as err:
        raise DataError(f"CSV file {path} is empty: it needs a header and at least one row"
                        f"{_OPTIONAL if split == 'test' else ''}.") from err  # fmt: skip
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"CSV file {path} cannot be parsed ({err}). Save it as UTF-8 CSV.") from err
    if raw.empty:
        raise DataError(f"CSV file {path} has a header but no rows: add the images' rows"
                        f"{_OPTIONAL if split == 'test' else ''}.")  # fmt: skip
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _check_columns(raw: pd.DataFrame, path: Path, split: str) -> None:
    missing = [c for c in required_columns(split) if c not in raw.columns]
    if missing:
        raise DataError(
            f"CSV file {path} lacks required column(s) {missing}; it has {list(raw.columns)}. "
            f"A {split} CSV needs {list(required_columns(split))} (the competition's names)."
        )
    if split == "test" and "target" in raw.columns:
        raise DataError(
            f"Test CSV {path} has a 'target' column: test labels must never reach training. "
            "If these rows are labelled, pass them as the train CSV; otherwise drop the column."
        )


def _rows(mask: pd.Series) -> str:
    """CSV line numbers (header is line 1) of the first few rows where ``mask`` is true."""
    lines = [str(i + 2) for i in mask[mask].index[:_EXAMPLES]]
    more = f" and {int(mask.sum()) - _EXAMPLES} more" if mask.sum() > _EXAMPLES else ""
    return f"line(s) {', '.join(lines)}{more}"


def _image_names(raw: pd.DataFrame, path: Path) -> pd.Series:
    names = raw["image_name"].str.strip()
    if names.isna().any():
        raise DataError(f"CSV file {path}: empty image_name at {_rows(names.isna())}.")
    unsafe = ~names.str.fullmatch(_SAFE_NAME) | names.str.contains("..", regex=False)
    if unsafe.any():
        bad = names[unsafe].head(_EXAMPLES).tolist()
        raise DataError(
            f"CSV file {path}: image_name {bad} at {_rows(unsafe)} is not a plain file stem "
            "(letters, digits, '_', '-', '.'; no path separators or '..'). Use the bare name, "
            "e.g. ISIC_0015719, and point --images at the folder."
        )
    dup = names.duplicated(keep=False)
    if dup.any():
        raise DataError(
            f"CSV file {path}: duplicate image_name {sorted(set(names[dup]))[:_EXAMPLES]} at "
            f"{_rows(dup)}. Each image must appear once; remove the repeated rows."
        )
    return names


def _patient_ids(raw: pd.DataFrame, path: Path) -> pd.Series:
    ids = raw["patient_id"].str.strip()
    if ids.isna().any():
        raise DataError(
            f"CSV file {path}: empty patient_id at {_rows(ids.isna())}. Patient-grouped "
            "cross-validation needs one; use a unique id per unknown patient if it is not known."
        )
    return ids.astype("string")


def _ages(raw: pd.DataFrame, path: Path) -> pd.Series:
    text = raw["age_approx"].str.strip()
    ages = pd.to_numeric(text, errors="coerce")
    bad = ages.isna() & text.notna()
    if bad.any():
        raise DataError(
            f"CSV file {path}: age_approx {text[bad].head(_EXAMPLES).tolist()} at {_rows(bad)} "
            "is not a number. Use years (e.g. 45 or 45.0), or leave the cell empty if unknown."
        )
    out_of_range = (ages < 0) | (ages > MAX_AGE)
    if out_of_range.any():
        raise DataError(
            f"CSV file {path}: age_approx {ages[out_of_range].head(_EXAMPLES).tolist()} at "
            f"{_rows(out_of_range)} is outside 0-{MAX_AGE}. Fix the value or leave it empty."
        )
    return ages.astype("Float64")


def _categorical(values: pd.Series, known: frozenset[str], what: str, path: Path) -> pd.Series:
    normalised = values.str.strip().str.lower()
    unknown = normalised.notna() & ~normalised.isin(known)
    if unknown.any():
        logger.warning(
            "%s: unknown %s value(s) %s at %s; kept as their own category.",
            path,
            what,
            sorted(normalised[unknown].unique())[:_EXAMPLES],
            _rows(unknown),
        )
    return normalised.astype("string")


def _targets(raw: pd.DataFrame, path: Path) -> pd.Series:
    text = raw["target"].str.strip()
    bad = ~text.isin(["0", "1", "0.0", "1.0"])
    if bad.any():
        raise DataError(
            f"CSV file {path}: target {text[bad].head(_EXAMPLES).tolist()} at {_rows(bad)} is "
            "not 0 or 1. Every training row needs a 0/1 label (1 = malignant)."
        )
    return text.astype(float).astype(int)


def _warn_train_test_overlap(table: pd.DataFrame) -> None:
    train, test = (table[table["split"] == s] for s in SPLITS)
    for column, what in (("image_name", "image name"), ("patient_id", "patient")):
        shared = set(train[column]) & set(test[column])
        if shared:
            logger.warning(
                "train and test share %d %s(s), e.g. %s: allowed, but check for leakage.",
                len(shared),
                what,
                sorted(shared)[:_EXAMPLES],
            )
