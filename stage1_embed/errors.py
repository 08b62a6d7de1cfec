"""One exception hierarchy for both stages.

Every error a user can cause derives from :class:`MelanomaStackError`. The CLIs print its message
(one paragraph: what is wrong, where, and how to fix it) and exit non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class MelanomaStackError(Exception):
    """Base class of every user-facing error; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(MelanomaStackError):
    """A flag, backbone spec, storage URL or other setting is invalid."""


class DataError(MelanomaStackError):
    """The input dataset (CSV rows, image files, TFRecords) is wrong."""


class ImageReadError(DataError):
    """One image could not be read; recorded per image, fatal only past the failure limit."""


class WeightsError(MelanomaStackError):
    """Pretrained weights could not be found or loaded."""


class ContractError(MelanomaStackError):
    """Stage 1 outputs are missing, stale or inconsistent with what stage 2 expects."""


class OutputError(MelanomaStackError):
    """An output folder cannot be written, or is locked by another run."""


class TrainingError(MelanomaStackError):
    """The training data cannot support the requested cross-validation."""


class ModelError(MelanomaStackError):
    """A saved model folder is missing, damaged, tampered with, or from another schema."""
