"""The expert stage on a small demo: out-of-fold honesty, extra rows, resume, cache, stage 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.common import CRASH_VARIABLE
from stage1_embed.config import Stage1Config
from stage1_embed.errors import ConfigError
from stage1_embed.experts.recipe import Recipe
from stage1_embed.experts.stage import ExpertConfig, _fold_rows, expert_path, run_experts
from stage1_embed.folds import load_or_make_eval_folds
from stage1_embed.pipeline import run_stage1
from stage1_embed.schema import read_provenance
from stage2_boost.config import Stage2Config
from stage2_boost.errors import ContractError
from stage2_boost.train import run_training
from tests.conftest import REPO, lite0_dir
from tests.stage2.helpers import FAST

pytestmark = pytest.mark.slow
SLUG = "tf_efficientnet_lite0"
RECIPE = Recipe(image_size=32, epochs=2, batch_size=16, tta=("hflip",))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("experts")
    data = root / "demo"
    subprocess.run([sys.executable, "-m", "stage1_embed.demo", "--out", str(data), "--patients", "30"],
                   check=True, cwd=REPO, capture_output=True)  # fmt: skip
    spec = f"local-dir:{lite0_dir()}"
    run_stage1(Stage1Config(data_dir=data, out_dir=root / "out", backbones=(spec,), image_format="jpeg",
                            num_workers=0, progress=False))  # fmt: skip
    return data, root / "out"


def config(data: Path, out: Path, **changes: object) -> ExpertConfig:
    spec = f"local-dir:{lite0_dir()}"
    base = ExpertConfig(data_dir=data, out_dir=out, specs=(spec,), recipe=RECIPE, n_folds=3, image_format="jpeg",
                        progress=False)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_no_oof_probability_comes_from_a_model_that_saw_its_patient() -> None:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"image_name": [f"I{i}" for i in range(120)],
                         "patient_id": [f"P{i // 4}" for i in range(100)] + [f"X{i}" for i in range(20)],
                         "split": ["train"] * 90 + ["test"] * 10 + ["train"] * 20,
                         "target": rng.integers(0, 2, 120), "extra": [False] * 100 + [True] * 20})  # fmt: skip
    for seed in range(5):  # a property over fold seeds
        rows["fold"] = [int(i // 4) % 3 if i < 90 else -1 for i in range(120)]
        cfg = ExpertConfig(Path("."), Path("."), ("x",), Recipe(), n_folds=3, seed=seed)
        for fold in range(3):
            fit, stop, valid, test = _fold_rows(rows, fold, cfg)
            seen = set(rows["patient_id"].to_numpy()[np.concatenate([fit, stop])])
            assert not seen & set(rows["patient_id"].to_numpy()[valid])  # no patient on both sides
            assert (
                not rows["extra"].to_numpy()[np.concatenate([stop, valid, test])].any()
            )  # extra only trains
            assert set(np.flatnonzero(rows["extra"])) <= set(fit)
            assert (rows["fold"].to_numpy()[valid] == fold).all() and (
                rows["split"].to_numpy()[test] == "test"
            ).all()
            assert not set(rows["patient_id"].to_numpy()[fit]) & set(
                rows["patient_id"].to_numpy()[stop]
            )


def test_experts_use_stage_2s_folds_cache_and_stack(
    demo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, out = demo
    (result,) = run_experts(config(data, out))
    assert result.status == "computed" and result.oof_auc is not None
    table = pd.read_parquet(expert_path(out, SLUG))
    manifest = pd.read_parquet(out / "manifest.parquet")
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    folds, _ = load_or_make_eval_folds(train, 3, 42, out / "stage2")
    by_name = table[table["split"] == "train"].set_index("image_name")["fold"]
    assert (
        by_name.loc[train["image_name"]].to_numpy() == folds
    ).all()  # the folds stage 2 scores with
    assert (
        table["expert"].between(0, 1).all()
        and (table["split"] == "test").sum() == (manifest["split"] == "test").sum()
    )
    assert len(list((out / "experts" / SLUG).glob("fold*.safetensors"))) == 3
    assert run_experts(config(data, out))[0].status == "cached"
    stage2 = Stage2Config(
        features_dir=out, n_components=4, experts=(SLUG,), **{**FAST, "n_folds": 3}
    )
    metrics = run_training(stage2).metrics
    assert "expert" in metrics["feature_groups"] and metrics["experts"][SLUG][
        "oof_auc"
    ] == pytest.approx(result.oof_auc)
    with pytest.raises(ContractError, match="fine-tuned in other folds"):
        run_training(replace(stage2, n_folds=4))
    import stage1_embed.experts.stage as stage  # an edit to the code retrains, as stage 1 re-embeds

    monkeypatch.setattr(stage, "code_digest", lambda *packages: "an edited fine-tune")
    assert run_experts(config(data, out))[0].status == "computed"


def test_a_killed_expert_run_resumes_to_the_same_probabilities(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = demo
    reference = tmp_path / "ref"
    killed = tmp_path / "killed"
    for folder in (reference, killed):
        subprocess.run(["cp", "-r", str(out), str(folder)], check=True)
        subprocess.run(["rm", "-rf", str(folder / "experts")], check=True)
    args = [sys.executable, "-m", "stage1_embed.experts", "--data", str(data), "--experts", f"local-dir:{lite0_dir()}",
            "--folds", "3", "--image-size", "32", "--epochs", "3", "--batch-size", "16", "--tta", "hflip",
            "--format", "jpeg", "--device", "cpu", "--ema", "0.9", "--layer-decay", "0.9", "--mixup", "0.2",
            "--no-progress"]  # fmt: skip
    subprocess.run([*args, "--out", str(reference)], check=True, cwd=REPO, capture_output=True)
    crashed = subprocess.run(  # SIGKILLs itself mid-fold: fold 1 has a checkpoint, not its result
        [*args, "--out", str(killed)], cwd=REPO, stderr=subprocess.DEVNULL,
        env={**os.environ, CRASH_VARIABLE: "checkpoint-fold1:1"},
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL
    assert (killed / "experts" / SLUG / ".work" / "fold1" / "checkpoint.pt").is_file()
    assert not expert_path(killed, SLUG).exists()
    resumed = subprocess.run(
        [*args, "--out", str(killed), "-v"], check=True, cwd=REPO, capture_output=True, text=True
    )
    assert "resuming after epoch" in resumed.stderr or "fold 0 done" not in resumed.stderr
    recipe = read_provenance(expert_path(reference, SLUG))["recipe"]  # the flags reached it
    assert (recipe["image_size"], recipe["epochs"], recipe["batch_size"], recipe["tta"], recipe["ema"],
            recipe["layer_decay"], recipe["mixup"]) == (32, 3, 16, ["hflip"], 0.9, 0.9, 0.2)  # fmt: skip
    a = pd.read_parquet(expert_path(reference, SLUG))
    b = pd.read_parquet(expert_path(killed, SLUG))
    assert a[["image_name", "split", "fold"]].equals(b[["image_name", "split", "fold"]])
    np.testing.assert_allclose(a["expert"], b["expert"], atol=1e-6)  # deterministic on the CPU


def test_the_schedule_warms_up_to_the_learning_rate_then_decays_to_one_percent() -> None:
    import torch

    from stage1_embed.experts.fold import _warmup_cosine

    recipe = Recipe(epochs=4, warmup_epochs=0.5, lr=1e-3)
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=recipe.lr)
    schedule = _warmup_cosine(optimizer, recipe, steps_per_epoch=10)
    lrs = []
    for step in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        schedule.step_update(step + 1)
    assert lrs[0] == pytest.approx(recipe.lr / 5) and max(lrs) == pytest.approx(recipe.lr)
    assert lrs.index(max(lrs)) == 5 and lrs == sorted(lrs[:6]) + lrs[6:]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * recipe.lr)


def test_the_weights_average_follows_the_training_from_behind() -> None:
    """With --ema the scored weights are timm's average, neither the start nor the last step."""
    import torch
    from timm.utils import ModelEmaV3

    from stage1_embed.experts.fold import Classifier, _one_epoch, _warmup_cosine

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 8))
    model = Classifier(backbone, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    start = model.head.weight.detach().clone()
    ema = ModelEmaV3(model, decay=0.5)
    recipe = Recipe(epochs=1, lr=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    batches = [(torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8), torch.randint(0, 2, (8,)))
               for _ in range(6)]  # fmt: skip
    _one_epoch(model, batches, torch.nn.BCEWithLogitsLoss(), optimizer,  # type: ignore[arg-type]
               _warmup_cosine(optimizer, recipe, 6), 0, torch.autocast("cpu", enabled=False),
               torch.device("cpu"), ema)  # fmt: skip
    averaged = ema.module.head.weight
    assert not torch.allclose(averaged, start) and not torch.allclose(averaged, model.head.weight)
    with pytest.raises(ConfigError, match="--ema"):
        Recipe(ema=1.0)


def test_layer_decay_slows_the_early_blocks_and_leaves_the_head_at_full_rate() -> None:
    """--layer-decay gives timm's per-block groups, whose scales timm's schedule applies."""
    import timm
    import torch

    from stage1_embed.experts.fold import Classifier, _param_groups, _warmup_cosine

    backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    model = Classifier(backbone, backbone.num_features, mean=(0.5,) * 3, std=(0.25,) * 3)
    recipe = Recipe(lr=0.01, layer_decay=0.5, warmup_epochs=0.0)
    optimizer = torch.optim.AdamW(_param_groups(model, recipe), lr=recipe.lr)
    _warmup_cosine(optimizer, recipe, 10).step_update(1)
    rates = [group["lr"] for group in optimizer.param_groups]
    head = next(g for g in optimizer.param_groups if g["params"][0] is model.head.weight)
    stem = next(g for g in optimizer.param_groups if g["params"][0] is backbone.conv_stem.weight)
    assert head["lr"] == max(rates) and stem["lr"] == min(rates) < head["lr"] * 0.5**10
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    one_rate = _param_groups(model, Recipe())
    assert len(one_rate) == 1 and len(one_rate[0]["params"]) == len(list(model.parameters()))
    with pytest.raises(ConfigError, match="--layer-decay"):
        Recipe(layer_decay=0.0)


def test_mixup_blends_images_and_labels_by_one_draw_that_the_seed_repeats() -> None:
    import torch

    from stage1_embed.experts.fold import _mix

    pixels = torch.stack(
        [torch.zeros(3, 4, 4, dtype=torch.uint8), torch.full((3, 4, 4), 200, dtype=torch.uint8)]
    )
    labels = torch.tensor([0.0, 1.0])
    torch.manual_seed(3)
    mixed, mixed_labels = _mix(pixels, labels, 0.4)
    lam = 1 - float(mixed_labels[0])
    assert 0 < lam < 1 and torch.allclose(mixed[0], torch.full((3, 4, 4), 200 * (1 - lam)))
    assert torch.allclose(mixed_labels, torch.tensor([1 - lam, lam]))
    torch.manual_seed(3)
    assert torch.equal(_mix(pixels, labels, 0.4)[0], mixed)
    with pytest.raises(ConfigError, match="--mixup"):
        Recipe(mixup=-1.0)
