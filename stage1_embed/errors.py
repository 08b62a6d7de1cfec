"""Stage 1's errors, in the project's one exception hierarchy (its base is in ``common``)."""

from __future__ import annotations

from .common import ConfigError, MelanomaStackError, OutputError

__all__ = ["ConfigError", "ContractError", "DataError", "ImageReadError", "MelanomaStackError",
           "OutputError", "WeightsError"]  # fmt: skip


class DataError(MelanomaStackError):
    """The input dataset (CSV rows, image files, TFRecords) is wrong."""


class ImageReadError(DataError):
    """One image could not be read; recorded per image, fatal only past the failure limit."""


class WeightsError(MelanomaStackError):
    """Pretrained weights could not be found or loaded."""


class ContractError(MelanomaStackError):
    """Stage 1 outputs are missing, stale or inconsistent with what stage 2 expects."""
