"""Stage 2's errors, in the project's one exception hierarchy (its base is in stage 1's ``common``)."""

from __future__ import annotations

from stage1_embed.common import ConfigError, MelanomaStackError, OutputError
from stage1_embed.errors import ContractError

__all__ = ["ConfigError", "ContractError", "MelanomaStackError", "ModelError", "OutputError"]  # fmt: skip


class ModelError(MelanomaStackError):
    """A saved model folder is missing, damaged, tampered with, or from another schema."""
