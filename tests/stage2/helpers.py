"""Write stage-1-shaped outputs directly (no CNN), for fast stage 2 tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stage1_embed.schema import (
    embedding_schema,
    embeddings_path,
    inputs_digest,
    with_provenance,
    write_manifest,
)


def synthetic_manifest(
    n_patients: int = 40, per_patient: int = 5, n_test_patients: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Rows whose label depends on age, site and (via ``make_embeddings``) the image."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients + n_test_patients):
        split = "train" if p < n_patients else "test"
        age = float(rng.integers(3, 17) * 5)
        for _ in range(per_patient):
            site = str(rng.choice(["torso", "head/neck", "lower extremity", "upper extremity"]))
            logit = (
                -2.2 + 0.05 * (age - 50) + (1.0 if site == "head/neck" else 0.0) + rng.normal(0, 1)
            )
            rows.append({"image_name": f"IMG_{len(rows):05d}", "patient_id": f"P_{p:04d}",
                         "sex": ["male", "female"][p % 2], "age_approx": age,
                         "anatom_site_general_challenge": site, "diagnosis": "melanoma" if logit > 0 else ["nevus", "unknown"][len(rows) % 2],
                         "target": int(logit > 0) if split == "train" else pd.NA, "split": split})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.loc[frame.sample(frac=0.05, random_state=seed).index, "anatom_site_general_challenge"] = (
        None
    )
    n = len(frame)
    return frame.assign(source_format="jpeg", relative_path=[f"x/{i}.jpg" for i in range(n)],
                        width=rng.choice([512, 1024], n), height=512, file_size=rng.integers(10_000, 90_000, n),
                        content_sha256=[f"{i:064x}" for i in range(n)],
                        read_status="ok", read_error=None)  # fmt: skip


def make_embeddings(manifest: pd.DataFrame, width: int = 16, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0, 1, (len(manifest), width)).astype(np.float32)
    target = pd.to_numeric(manifest["target"], errors="coerce").fillna(0).to_numpy(dtype=float)
    vectors[:, 0] += 2.0 * target
    return vectors


def write_stage1(
    out: Path, manifest: pd.DataFrame, backbones: dict[str, np.ndarray], dataset: str = "synthetic"
) -> Path:
    """manifest.parquet + embeddings/<slug>.parquet exactly as stage 1's contract says."""
    digest = inputs_digest(manifest)
    write_manifest(manifest, out, {"inputs_digest": digest, "dataset": dataset})
    for slug, vectors in backbones.items():
        write_embedding_file(out, slug, manifest, vectors, {"inputs_digest": digest, "slug": slug})
    return out


def write_embedding_file(
    out: Path, slug: str, keys: pd.DataFrame, vectors: np.ndarray, provenance: dict
) -> Path:
    width = vectors.shape[1]
    schema = with_provenance(embedding_schema(width), provenance)
    flat = pa.array(vectors.astype(np.float32).ravel(), pa.float32())
    table = pa.table([pa.array(keys["image_name"].astype(str)), pa.array(keys["split"].astype(str)),
                      pa.FixedSizeListArray.from_arrays(flat, width),
                      pa.array([None] * len(keys), pa.string())], schema=schema)  # fmt: skip
    path = embeddings_path(out, slug)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# Stage 2 settings small enough for tests: a few trials, few rounds, few bootstrap resamples.
FAST = {
    "n_trials": 2,
    "max_rounds": 200,
    "early_stopping": 20,
    "n_bootstrap": 100,
    "n_folds": 3,
    "report": False,
}


def direct_paired_interval(
    target: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, patients: np.ndarray,
    n_boot: int, seed: int,
) -> np.ndarray:  # fmt: skip
    """The paired patient bootstrap's 95% interval of AUC(B) - AUC(A), one scikit-learn weighted
    AUC per replicate and run: what ``metrics.paired_differences`` must equal."""
    from sklearn.metrics import roc_auc_score

    from stage2_boost.metrics import patient_draws

    draws, codes = patient_draws(patients, n_boot, seed)
    deltas = []
    for replicate in draws:
        weight = replicate[codes]
        keep = weight > 0
        deltas.append(roc_auc_score(target[keep], score_b[keep], sample_weight=weight[keep])
                      - roc_auc_score(target[keep], score_a[keep], sample_weight=weight[keep]))  # fmt: skip
    return np.percentile(deltas, [2.5, 97.5])
