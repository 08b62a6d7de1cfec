"""Compare metadata stored with the images (DICOM headers, TFRecord fields) against the CSV.

The CSV stays the source of truth; disagreements are reported (count + examples), never resolved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .sources.base import SHARD_KEY, ImageKey

logger = logging.getLogger(__name__)

# Fields whose stored values are comparable with the CSV's directly.
DIRECT_FIELDS = ("patient_id", "sex", "age_approx", "anatom_site_general_challenge", "target")
# TFRecord integer codes (pandas.factorize of someone's subset): only their consistency is checkable.
CODED_FIELDS = {
    "patient_id": "patient_id",
    "sex": "sex",
    "anatom_site_general_challenge": "anatom_site_general_challenge",
    "anatom_site_general": "anatom_site_general_challenge",
    "diagnosis": "diagnosis",
}


@dataclass
class Disagreement:
    column: str
    count: int
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.column}: {self.count} image(s) disagree with the CSV, e.g. {self.examples}"


def cross_check(
    table: pd.DataFrame, headers: Mapping[ImageKey, Mapping[str, Any]]
) -> list[Disagreement]:
    """Disagreements between ``headers`` (per image) and the CSV rows in ``table``."""
    if not headers:
        return []
    rows = table.set_index(["split", "image_name"])
    found = [_direct(rows, headers, name) for name in DIRECT_FIELDS]
    found += [_coded(rows, headers, stored, csv) for stored, csv in CODED_FIELDS.items()]
    result = [d for d in found if d is not None and d.count]
    for item in result:
        logger.warning("metadata cross-check: %s", item.describe())
    return result


def _direct(rows: pd.DataFrame, headers: Mapping, name: str) -> Disagreement | None:
    out = Disagreement(name, 0)
    for key, header in headers.items():
        stored = header.get(name)
        if stored is None or (isinstance(stored, int) and name not in ("age_approx", "target")):
            continue  # integer codes of categorical fields are checked by _coded
        expected = rows.at[key, name]
        if pd.isna(expected):
            continue
        if not _same(stored, expected):
            out.count += 1
            if len(out.examples) < 5:
                out.examples.append(f"{key[1]}: stored {stored!r}, CSV {expected!r}")
    return out


def _coded(
    rows: pd.DataFrame, headers: Mapping, stored_name: str, csv_name: str
) -> Disagreement | None:
    """Each integer code must stand for one CSV value; report codes that stand for several."""
    pairs = [
        (h.get(SHARD_KEY, ""), h[stored_name], rows.at[k, csv_name])
        for k, h in headers.items()
        if isinstance(h.get(stored_name), int) and pd.notna(rows.at[k, csv_name])
    ]
    if not pairs:
        return None
    frame = pd.DataFrame(pairs, columns=["shard", "code", "value"])
    values_per_code = frame.groupby(["shard", "code"])["value"].unique()
    ambiguous = values_per_code[values_per_code.map(len) > 1]
    count = int(frame.set_index(["shard", "code"]).index.isin(ambiguous.index).sum())
    examples = [
        f"{shard} code {c} -> {sorted(map(str, v))[:3]}"
        for (shard, c), v in ambiguous.head(5).items()
    ]
    return Disagreement(f"{stored_name} (coded)", count, examples)


def _same(stored: Any, expected: Any) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return float(stored) == float(expected)
        except (TypeError, ValueError):
            return False
    return str(stored).strip().lower() == str(expected).strip().lower()
