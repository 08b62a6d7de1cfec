"""Every flag an error or warning suggests works where the user meets the message.

Messages raised by the stages reach users through ``./run_all.sh`` and through ``python -m``.
A flag a message names must be accepted by every command that can print the message, unless the
message names the command it means (``python -m stage1_embed --skip-missing``)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from stage1_embed.__main__ import build_parser as stage1_parser
from stage1_embed.experts.__main__ import build_parser as experts_parser
from stage2_boost.cli import build_parser as stage2_parser
from tests.conftest import REPO

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
COMMANDS = {
    "python -m stage1_embed.experts": "experts",
    "python -m stage1_embed": "stage1",
    "python -m stage2_boost": "stage2",
    "run_all.sh": "run_all",
}


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= parser_flags(sub)
    return flags


def run_all_flags() -> set[str]:
    text = (REPO / "run_all.sh").read_text()
    cases = re.findall(r"^\s+((?:--[a-z-]+\|?)+|-h\|--help)\)", text, flags=re.M)
    return {flag for case in cases for flag in case.split("|")}


FLAGS = {
    "stage1": parser_flags(stage1_parser()),
    "experts": parser_flags(experts_parser()),
    "stage2": parser_flags(stage2_parser()),
    "run_all": run_all_flags(),
}


def front_ends(path: Path) -> set[str]:
    """The commands that can print a message of this module."""
    parts = path.relative_to(REPO).parts
    if parts[-1] in ("config.py", "recipe.py", "__main__.py", "cli.py"):
        # checks of the values given to a command's own flags
        return {"stage2" if parts[0] == "stage2_boost" else "experts" if "experts" in parts
                else "stage1"}  # fmt: skip
    if parts[-1] == "folds.py":  # the contract's folds: checked by stage 2 and the expert stage
        return {"stage2", "experts"}
    if parts[0] == "stage2_boost":
        return {"stage2", "run_all"}
    if parts[:2] == ("stage1_embed", "experts"):
        return {"experts", "run_all"}
    if parts[-1] in ("demo.py", "kaggle_layout.py"):
        return {"stage1"}  # the demo generator: run_all.sh creates the demo itself
    return {"stage1", "run_all"}


def messages(path: Path) -> list[tuple[int, str]]:
    """The text of every raised exception and logged warning or error in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        call = node.exc if isinstance(node, ast.Raise) else node
        if not isinstance(call, ast.Call):
            continue
        name = (
            call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        )
        if isinstance(node, ast.Raise) or name in ("warning", "error"):
            text = "".join(
                part.value
                for arg in call.args
                for part in ast.walk(arg)
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
            )
            if FLAG.search(text):
                found.append((call.lineno, text))
    return found


SOURCES = sorted(
    p for package in ("stage1_embed", "stage2_boost") for p in (REPO / package).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_suggested_flag_is_accepted_where_the_message_appears(path: Path) -> None:
    wrong = []
    for line, text in messages(path):
        named = {
            key
            for command, key in COMMANDS.items()
            if command in text.replace("stage1_embed.experts", "")
        }
        named |= {"experts"} if "stage1_embed.experts" in text else set()
        for flag in FLAG.findall(text):
            if named:  # the message says which command: one of them takes the flag
                refusing = [] if any(flag in FLAGS[c] for c in named) else sorted(named)
            else:  # every command that can print the message takes it
                refusing = sorted(c for c in front_ends(path) if flag not in FLAGS[c])
            if refusing:
                wrong.append(
                    f"line {line}: {flag} is not a flag of {', '.join(refusing)}: {text[:90]!r}"
                )
    assert not wrong, "\n".join(wrong)


def test_the_walk_finds_the_messages() -> None:
    texts = [t for p in SOURCES for _, t in messages(p)]
    assert len(texts) > 20 and any("--out" in t for t in texts)
    assert "--skip-missing" in FLAGS["stage1"] and "--model" in FLAGS["run_all"]


def train_arguments(text: str) -> list[list[str]]:
    """Each ``--flag value`` a rendered message suggests to ``python -m stage2_boost train``."""
    pairs = re.findall(r"(--[a-z][a-z0-9-]+) ([^\s,.()]+(?:,[^\s,.()]+)*)", text)
    return [[f, value] for f, value in pairs if f in FLAGS["stage2"] and f != "--features"]


@pytest.mark.parametrize(
    ("n_components", "groups"),
    [
        (4, ("metadata", "patient", "embedding", "probe", "ugly-duckling")),
        (7, ("metadata", "patient", "embedding", "probe", "ugly-duckling")),
        (32, ("embedding", "probe")),
        (4, ("metadata", "patient", "ugly-duckling")),
    ],
)
def test_rendered_overfitting_advice_runs(n_components: int, groups: tuple[str, ...]) -> None:
    """Suggestions built from the run's values parse, name real groups and change something."""
    from stage2_boost.config import GROUPS
    from stage2_boost.train import overfitting_advice

    text = overfitting_advice(60, 27, n_components, groups)
    assert text is not None and overfitting_advice(20, 27, n_components, groups) is None
    for flag, value in train_arguments(text):
        stage2_parser().parse_args(["train", flag, value])  # argparse exits on a bad value
        if flag == "--groups":
            assert set(value.split(",")) <= set(GROUPS) and set(value.split(",")) < set(groups)
        if flag == "--components":
            assert int(value) < n_components, "suggests what the run already did"
