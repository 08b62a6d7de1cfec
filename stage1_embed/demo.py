"""A deterministic synthetic dermoscopy dataset, so ``./run_all.sh`` works with no real data.

Each patient has a "nevus style" (colour, size, border, asymmetry) that their benign lesions share.
Malignancy risk rises with the lesion's own look (irregular border, asymmetry, colour variegation),
with age and site, and with how unlike the patient's other lesions it looks (the "ugly duckling").
The true risk per image goes to ``oracle.csv``, apart from the CSVs, so a benchmark can report the
achievable AUC. No real ISIC image is used.

    python -m stage1_embed.demo --out data/demo
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from .common import atomic_write_text
from .kaggle_layout import FORMATS, encode_jpeg, write_kaggle_dataset

logger = logging.getLogger(__name__)

SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital")
SITE_WEIGHTS = (0.5, 0.22, 0.15, 0.09, 0.03, 0.01)
SITE_RISK = {"torso": 0.0, "lower extremity": -0.2, "upper extremity": 0.1, "head/neck": 0.6,
             "palms/soles": 0.3, "oral/genital": 0.3}  # fmt: skip
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class DemoSpec:
    n_train_patients: int = 60
    n_test_patients: int = 16
    images_per_patient: tuple[int, int] = (3, 9)
    image_size: int = 256
    seed: int = 2020


@dataclass(frozen=True)
class Lesion:
    """Look of one lesion; each field is a knob of the renderer."""

    radius: float  # fraction of the image size
    irregularity: float  # amplitude of border harmonics
    asymmetry: float  # elongation
    variegation: float  # 0 = one colour, 1 = many
    colour: tuple[float, float, float]  # base RGB in [0, 1]
    angle: float


def generate_demo(
    out: Path, spec: DemoSpec = DemoSpec(), formats: tuple[str, ...] = FORMATS
) -> Path:
    """Write the demo dataset (CSVs, images in ``formats``, ``oracle.csv``) to ``out``."""
    rng = np.random.default_rng(spec.seed)
    rows, lesions = _sample_rows(rng, spec)
    table = pd.DataFrame(rows)
    jpegs = {
        name: encode_jpeg(_render(lesion, spec.image_size, np.random.default_rng([spec.seed, i])))
        for i, (name, lesion) in enumerate(lesions.items())
    }
    csv_columns = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]
    train = table[table["split"] == "train"]
    tables = {
        "train": train[[*csv_columns, "diagnosis", "benign_malignant", "target"]],
        "test": table.loc[table["split"] == "test", csv_columns],
    }
    write_kaggle_dataset(out, tables, jpegs, formats)
    table[["image_name", "split", "risk", "target"]].to_csv(out / "oracle.csv", index=False)
    atomic_write_text(out / "DEMO.md", _readme(spec, table))
    return out


def _sample_rows(rng: np.random.Generator, spec: DemoSpec) -> tuple[list[dict], dict[str, Lesion]]:
    rows: list[dict] = []
    lesions: dict[str, Lesion] = {}
    n_patients = spec.n_train_patients + spec.n_test_patients
    for p in range(n_patients):
        split = "train" if p < spec.n_train_patients else "test"
        sex = rng.choice(["male", "female"])
        age = float(np.clip(np.round(rng.normal(50, 15) / 5) * 5, 15, 90))
        style = _patient_style(rng)
        for _ in range(rng.integers(*spec.images_per_patient, endpoint=True)):
            name = f"DEMO_{len(rows):07d}"
            duckling = rng.random() < 0.12
            lesion = _odd_lesion(rng) if duckling else _like_style(rng, style)
            site = str(rng.choice(SITES, p=SITE_WEIGHTS))
            logit = (
                -3.3 + 2.4 * lesion.irregularity / 0.25 + 1.6 * lesion.variegation
                + 1.2 * lesion.asymmetry / 0.4 + 1.8 * duckling + 0.035 * (age - 50)
                + SITE_RISK[site] + (0.3 if sex == "male" else 0.0)
            )  # fmt: skip
            risk = float(1 / (1 + np.exp(-logit)))
            target = int(rng.random() < risk)
            rows.append({
                "image_name": name, "patient_id": f"DP_{p:04d}", "sex": sex, "age_approx": age,
                "anatom_site_general_challenge": site, "split": split, "risk": risk, "target": target,
                "diagnosis": "melanoma" if target else "nevus",
                "benign_malignant": "malignant" if target else "benign",
            })  # fmt: skip
            lesions[name] = lesion
    _blank_some(rng, rows)
    return rows, lesions


def _patient_style(rng: np.random.Generator) -> Lesion:
    brown = rng.uniform(0.25, 0.55)
    return Lesion(
        radius=rng.uniform(0.14, 0.24), irregularity=rng.uniform(0.0, 0.08),
        asymmetry=rng.uniform(0.0, 0.15), variegation=rng.uniform(0.0, 0.25),
        colour=(brown + 0.05, brown * 0.62, brown * 0.45), angle=0.0,
    )  # fmt: skip


def _like_style(rng: np.random.Generator, style: Lesion) -> Lesion:
    jitter = rng.normal(0, 0.03, 3)
    return Lesion(
        radius=float(np.clip(style.radius * rng.uniform(0.85, 1.15), 0.08, 0.35)),
        irregularity=float(np.clip(style.irregularity + rng.normal(0, 0.02), 0, 0.35)),
        asymmetry=float(np.clip(style.asymmetry + rng.normal(0, 0.04), 0, 0.6)),
        variegation=float(np.clip(style.variegation + rng.normal(0, 0.05), 0, 1)),
        colour=tuple(np.clip(np.array(style.colour) + jitter, 0.05, 0.9)),
        angle=float(rng.uniform(0, np.pi)),
    )


def _odd_lesion(rng: np.random.Generator) -> Lesion:
    """A lesion drawn from outside the patient's style: the "ugly duckling"."""
    dark = rng.uniform(0.1, 0.35)
    return Lesion(
        radius=rng.uniform(0.2, 0.34), irregularity=rng.uniform(0.08, 0.3),
        asymmetry=rng.uniform(0.15, 0.55), variegation=rng.uniform(0.35, 1.0),
        colour=(dark + 0.05, dark * 0.6, dark * 0.6 + rng.uniform(0, 0.15)), angle=rng.uniform(0, np.pi),
    )  # fmt: skip


def _blank_some(rng: np.random.Generator, rows: list[dict]) -> None:
    """Missing sex/age/site, as in the real data (about 0.2% / 0.2% / 1.6%, more here)."""
    for row in rows:
        if rng.random() < 0.01:
            row["sex"] = None
        if rng.random() < 0.01:
            row["age_approx"] = None
        if rng.random() < 0.03:
            row["anatom_site_general_challenge"] = None


def _render(lesion: Lesion, size: int, rng: np.random.Generator) -> np.ndarray:
    """Skin background, a lesion with the given border/shape/colours, dermoscope vignette."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    skin = np.array([0.87, 0.68, 0.58]) + rng.normal(0, 0.03, 3)
    image = np.broadcast_to(skin, (size, size, 3)) * (
        1 + 0.05 * _smooth_noise(rng, size, 8)[..., None]
    )
    theta = np.arctan2(yy, xx) - lesion.angle
    border = 1 + lesion.asymmetry * np.cos(2 * theta) / 2
    for k in range(3, 9):
        border += (
            lesion.irregularity
            * rng.normal(0, 1)
            / k**0.5
            * np.cos(k * theta + rng.uniform(0, 6.3))
        )
    dist = np.hypot(xx + rng.normal(0, 0.03), yy + rng.normal(0, 0.03)) / (lesion.radius * border)
    mask = np.clip((1.15 - dist) / 0.3, 0, 1)[..., None]
    pigment = np.array(lesion.colour) * (1 + 0.15 * _smooth_noise(rng, size, 16)[..., None])
    palette = np.array([[0.1, 0.07, 0.08], [0.35, 0.38, 0.5], [0.6, 0.25, 0.25], [0.45, 0.3, 0.2]])
    for colour in palette[rng.permutation(4)[: 1 + int(lesion.variegation * 3.5)]]:
        blob = np.clip(_smooth_noise(rng, size, 6) * 2 - 1 + lesion.variegation, 0, 1)[..., None]
        pigment = pigment * (1 - 0.7 * blob) + colour * 0.7 * blob
    image = image * (1 - mask) + pigment * mask
    vignette = np.clip(1.35 - 1.6 * np.hypot(xx, yy), 0, 1)[..., None]
    pixels = np.clip(image * vignette * 255, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.7)))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random cells upsampled bicubically."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    fine = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(fine, dtype=np.float64) / 255


def _readme(spec: DemoSpec, table: pd.DataFrame) -> str:
    train = table[table["split"] == "train"]
    return (
        "# Synthetic demo dataset (generated, not real patients)\n\n"
        f"Generator version {GENERATOR_VERSION}, seed {spec.seed}. {len(train)} train images "
        f"({int(train['target'].sum())} malignant) from {train['patient_id'].nunique()} patients, "
        f"{len(table) - len(train)} test images. Formats: JPEG (`jpeg/`), DICOM (`train/`, `test/`), "
        "TFRecord (`tfrecords/`), all holding the same JPEG bytes. `oracle.csv` has the true risk.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stage1_embed.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    parser.add_argument("--seed", type=int, default=DemoSpec.seed)
    parser.add_argument(
        "--patients", type=int, default=DemoSpec.n_train_patients, help="train patients"
    )
    args = parser.parse_args(argv)
    generate_demo(args.out, DemoSpec(n_train_patients=args.patients, seed=args.seed))
    print(f"demo dataset written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
