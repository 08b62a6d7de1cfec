"""The command lines as users meet them: run_all.sh, stage CLIs, errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO


def run(args: list[str], cwd: Path = REPO, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize("args", [["--bogus"], ["--stage", "3"], ["--trials", "many"], ["--data"]])
def test_run_all_rejects_bad_flags_with_usage(args: list[str]) -> None:
    result = run(["bash", "run_all.sh", *args])
    assert result.returncode == 2 and "error:" in result.stderr and "--help" in result.stderr


def test_run_all_help() -> None:
    result = run(["bash", "run_all.sh", "--help"])
    assert result.returncode == 0 and "--backbones" in result.stdout and "--smoke" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-m", "stage1_embed", "--data", "/nonexistent", "--out", "{tmp}/o"],
            "CSV file not found",
        ),
        (
            [
                "-m",
                "stage1_embed",
                "--data",
                "{tmp}",
                "--backbones",
                "nonsense_net",
                "--out",
                "{tmp}/o",
            ],
            "Unknown backbone",
        ),
        (["-m", "stage1_embed", "--out", "{tmp}/o"], "Name the data: --data DIR"),
        (["-m", "stage2_boost", "train", "--features", "{tmp}/none"], "No stage 1 manifest"),
        (["-m", "stage2_boost", "runs", "--out", "{tmp}/none"], "No run log"),
        (["-m", "stage2_boost", "train", "--groups", "colour"], "Unknown feature group"),
    ],
)
def test_user_errors_are_one_paragraph_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run([sys.executable, *[a.format(tmp=tmp_path) for a in args]])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unknown_flag_is_an_error() -> None:
    result = run([sys.executable, "-m", "stage2_boost", "train", "--trails", "3"])
    assert result.returncode == 2 and "unrecognized arguments: --trails" in result.stderr


@pytest.mark.slow
def test_smoke_run_then_stage2_rerun_leaves_stage1_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = tmp_path / "demo"
    subprocess.run(
        [sys.executable, "-m", "stage1_embed.demo", "--out", str(data), "--patients", "30"],
        check=True,
        cwd=REPO,
    )
    first = run(["bash", "run_all.sh", "--smoke", "--data", str(data), "--out", str(out)])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "blend  OOF AUC" in first.stdout and "== done" in first.stdout
    stage1_files = [p for p in out.rglob("*") if p.is_file() and "stage2" not in p.parts]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in stage1_files}
    second = run(
        ["bash", "run_all.sh", "--smoke", "--data", str(data), "--out", str(out), "--stage", "2"]
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "stage 1" not in second.stdout
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in stage1_files}
    assert before == after
    assert len(pd.read_csv(out / "stage2" / "runs.csv")) == 2
    runs = run([sys.executable, "-m", "stage2_boost", "runs", "--out", str(out / "stage2")])
    assert (
        runs.returncode == 0
        and runs.stdout.count("metadata+patient+embedding+probe+ugly-duckling+neighbours") == 2
    )
    inspect = run([sys.executable, "-m", "stage2_boost", "inspect", "--out", str(out / "stage2")])
    assert (
        inspect.returncode == 0
        and ".lgbm." in inspect.stdout
        and "optuna-dashboard sqlite:///" in inspect.stdout
    )
    for name in ("roc.png", "fold_auc.png", "importance.png", "auc_by_subgroup.png", "report.md"):
        assert (out / "stage2" / "report" / name).stat().st_size > 1000, name
    assert "embedding from last+last-1" in (out / "stage2" / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--explain", "--stage", "2"], "--explain applies to scoring with a saved model"),
        (["--split", "train", "--stage", "2"], "--split applies to scoring with a saved model"),
        (["--model", "{tmp}", "--data", "{tmp}", "--trials", "5"], "--trials applies to training"),
        (["--model", "{tmp}", "--data", "{tmp}", "--features", "metadata"], "--features applies"),
        (["--model", "{tmp}", "--data", "{tmp}", "--stages", "head"], "--stages applies"),
    ],
)
def test_run_all_refuses_flags_of_the_other_mode(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """These ran a 20-trial training (and replaced the saved model) or were ignored."""
    result = run(["bash", "run_all.sh", *[a.format(tmp=tmp_path) for a in args]])
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_run_all_paths_are_relative_to_the_callers_folder(tmp_path: Path) -> None:
    """`cd ~ && path/to/run_all.sh --data x` used to look for x inside the repository."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.csv").write_text(
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target\n"
        + "".join(f"I{i},P{i % 6},male,{30 + i},torso,{int(i % 4 == 0)}\n" for i in range(24))
    )
    result = run(["bash", str(REPO / "run_all.sh"), "--data", "mine", "--out", "out", "--backbones",
                  "none", "--stage", "1"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "manifest.parquet").is_file()
    assert f"outputs {tmp_path / 'out'}" in result.stdout  # the final line says where, absolutely


def test_runs_defaults_to_the_newest_stage2_folder_run_all_wrote(tmp_path: Path) -> None:
    """`runs` looked in data/out/stage2, which ./run_all.sh never writes."""
    from stage2_boost.outputs import RUNS_FILE, append_run

    for name in ("older", "newer"):
        row = {"time": "2026-12-03 10:00:00", "run_id": f"run-{name}", "feature_groups": "metadata",
               "backbones": "-", "trials": 1, "oof_auc": 0.7, "ci_low": 0.6, "ci_high": 0.8,
               "tuning_auc": 0.7, "n_train": 10, "n_pos": 2, "n_extra": 0, "seconds": 1.0}  # fmt: skip
        append_run(row, tmp_path / "data" / "out" / name / "stage2" / RUNS_FILE)
        time.sleep(0.05)  # distinct modification times
    result = run([sys.executable, "-m", "stage2_boost", "runs"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run-newer" in result.stdout and "run-older" not in result.stdout
    assert str(Path("data/out/newer/stage2")) in result.stderr
    empty = run([sys.executable, "-m", "stage2_boost", "runs"], cwd=tmp_path / "data")
    assert empty.returncode == 2 and "pass --out" in empty.stderr


def test_stage1_reads_only_the_data_it_is_given(tmp_path: Path, tiny_dataset: Path) -> None:
    """--train-csv without --data reads that CSV alone: a demo beside the working folder (the old
    default --data) adds no rows, and the dataset is named after --out, not 'demo'."""
    demo = tmp_path / "work" / "data" / "demo"
    demo.mkdir(parents=True)
    pd.DataFrame({"image_name": ["DEMO_0001"], "patient_id": ["DP"]}).to_csv(demo / "test.csv")
    pd.read_csv(tiny_dataset / "train.csv").to_csv(demo / "train.csv", index=False)
    out = tmp_path / "out" / "mine"
    result = run([sys.executable, "-m", "stage1_embed", "--train-csv", str(tiny_dataset / "train.csv"),
                  "--images", str(tiny_dataset / "jpeg" / "train"), "--out", str(out),
                  "--backbones", "none"], cwd=tmp_path / "work")  # fmt: skip
    assert result.returncode == 0, result.stderr
    from stage1_embed.schema import read_manifest

    manifest, provenance = read_manifest(out)
    assert (
        set(manifest["split"]) == {"train"}
        and not manifest["image_name"].str.startswith("DEMO").any()
    )
    assert provenance["dataset"] == "mine" and provenance["test_csv"] is None


def test_every_feature_group_is_in_the_help_and_the_readme() -> None:
    from stage2_boost.config import GROUPS

    helptext = run(["bash", "run_all.sh", "--help"]).stdout
    readme = (REPO / "README.md").read_text()
    for group in GROUPS:
        assert group in helptext and f"`{group}`" in readme, group


def test_stage1_flags_set_the_config_fields_their_dests_name() -> None:
    """The parser's defaults are Stage1Config's, and each renamed flag reaches its field."""
    from stage1_embed.__main__ import build_parser, config_from_args
    from stage1_embed.config import Stage1Config

    parse = build_parser().parse_args
    assert config_from_args(parse(["--data", "d"])) == Stage1Config(data_dir=Path("d"))
    config = config_from_args(parse(["--train-csv", "t.csv", "--images", "i", "--out", "o",
                                     "--format", "jpeg", "--workers", "3", "--no-progress",
                                     "--backbones", "none", "--stages", "head", "--tta", "hflip",
                                     "--extra-data", "x"]))  # fmt: skip
    assert (config.train_csv, config.images_dir, config.out_dir, config.image_format) == (
        Path("t.csv"), Path("i"), Path("o"), "jpeg")  # fmt: skip
    assert (config.num_workers, config.progress, config.backbones) == (3, False, ())
    assert (config.stages, config.tta, config.extra_data) == (("head",), ("hflip",), (Path("x"),))
