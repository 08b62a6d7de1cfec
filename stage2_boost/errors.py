"""Stage 2 uses the project's one exception hierarchy (defined with the stage 1 contract)."""

from stage1_embed.errors import (
    ConfigError,
    ContractError,
    MelanomaStackError,
    ModelError,
    OutputError,
    TrainingError,
)

__all__ = [
    "ConfigError",
    "ContractError",
    "MelanomaStackError",
    "ModelError",
    "OutputError",
    "TrainingError",
]
