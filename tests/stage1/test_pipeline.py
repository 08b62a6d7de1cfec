"""Stage 1 end to end on tiny data: outputs, reruns, shards, resume, failures, locking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from filelock import FileLock

from stage1_embed.common import CRASH_VARIABLE
from stage1_embed.config import Stage1Config
from stage1_embed.errors import DataError, OutputError
from stage1_embed.pipeline import run_stage1
from stage1_embed.schema import SCHEMA_VERSION, read_embeddings, read_manifest, read_provenance
from tests.conftest import REPO, lite0_dir

SLUG = "tf_efficientnet_lite0"


@pytest.fixture
def config(tiny_dataset: Path, tmp_path: Path) -> Stage1Config:
    spec = f"local-dir:{lite0_dir()}"
    return Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "out", backbones=(spec,), batch_size=4,
                        chunk_size=4, num_workers=0, progress=False)  # fmt: skip


def embeddings(out: Path, slug: str = SLUG) -> pd.DataFrame:
    table = read_embeddings(out / "embeddings" / f"{slug}.parquet")
    return table.keys.assign(vector=list(table.vectors))


def test_writes_manifest_and_embeddings_with_provenance(config: Stage1Config) -> None:
    summary = run_stage1(config)
    manifest, meta = read_manifest(config.out_dir)
    assert len(manifest) == 15 and set(manifest["read_status"]) == {"ok"}
    assert set(manifest["split"]) == {"train", "test"} and (manifest["width"] == 48).all()
    table = read_embeddings(config.out_dir / "embeddings" / f"{SLUG}.parquet")
    assert (
        table.vectors.shape == (15, 320 + 112) and table.vectors.dtype == np.float32
    )  # last two stages
    p = table.provenance
    assert p["schema_version"] == SCHEMA_VERSION and p["pretrained"] is True
    assert p["inputs_digest"] == meta["inputs_digest"] and len(p["weights"]["sha256"]) == 64
    assert p["preprocessing"]["input_size"] == [3, 224, 224] and p["tta_views"] == []
    assert p["preprocessing"]["stages"] == ["last", "last-1"]
    assert {"torch", "timm"} <= set(p["libraries"])
    assert summary.results[0].status == "computed"
    assert not list((config.out_dir / "embeddings").glob(".parts/*/part-*.parquet"))


def test_rerun_is_a_noop_and_changed_setting_recomputes(config: Stage1Config) -> None:
    run_stage1(config)
    path = config.out_dir / "embeddings" / f"{SLUG}.parquet"
    before = path.stat().st_mtime_ns
    assert run_stage1(config).results[0].status == "cached"
    assert path.stat().st_mtime_ns == before
    flipped = run_stage1(replace(config, tta=("hflip",)))
    assert flipped.results[0].status == "computed" and read_provenance(path)["tta_views"] == [
        "hflip"
    ]


def test_a_changed_image_of_the_same_size_is_embedded_again_and_only_it(
    config: Stage1Config,
) -> None:
    """Up to date means same bytes: an image replaced by another of the same name and byte
    size, its mtime restored, is recomputed; the other rows are reused unchanged."""
    run_stage1(config)
    before = embeddings(config.out_dir).set_index("image_name")
    folder = config.data_dir / "jpeg" / "train"
    target, other = folder / "IMG_0001.jpg", folder / "IMG_0002.jpg"
    size, times = target.stat().st_size, target.stat()
    replacement = other.read_bytes()[:size].ljust(
        size, b"\0"
    )  # bytes after the JPEG's end are ignored
    if len(other.read_bytes()) > size:
        replacement = target.read_bytes()[:-200] + bytes(200)  # same size, a damaged tail
    target.write_bytes(replacement)
    os.utime(target, ns=(times.st_atime_ns, times.st_mtime_ns))
    result = run_stage1(config).results[0]
    assert result.status == "computed" and result.n_images == 1
    after = embeddings(config.out_dir).set_index("image_name")
    assert not np.array_equal(after.loc["IMG_0001", "vector"], before.loc["IMG_0001", "vector"])
    for name in before.index.drop("IMG_0001"):
        np.testing.assert_array_equal(after.loc[name, "vector"], before.loc[name, "vector"])
    fresh = run_stage1(replace(config, out_dir=config.out_dir.with_name("fresh")))
    assert fresh.results[0].n_images == 15
    np.testing.assert_allclose(  # the reused + recomputed file equals a fresh folder's
        np.stack(embeddings(config.out_dir).sort_values("image_name")["vector"]),
        np.stack(embeddings(config.out_dir.with_name("fresh")).sort_values("image_name")["vector"]),
        rtol=0, atol=1e-6,
    )  # fmt: skip


def test_a_changed_csv_value_rewrites_the_manifest_and_reuses_every_embedding(
    config: Stage1Config,
) -> None:
    run_stage1(config)
    csv = config.data_dir / "train.csv"
    table = pd.read_csv(csv)
    table["age_approx"] = 85.0
    table.to_csv(csv, index=False)
    assert run_stage1(config).results[0].status == "cached"
    manifest, _ = read_manifest(config.out_dir)
    assert (manifest.query("split == 'train'")["age_approx"] == 85.0).all()


def test_same_embeddings_from_all_three_formats(config: Stage1Config) -> None:
    vectors = {}
    for fmt in ("jpeg", "dicom", "tfrecord"):
        out = config.out_dir.with_name(f"out_{fmt}")
        run_stage1(replace(config, image_format=fmt, out_dir=out))
        vectors[fmt] = embeddings(out).sort_values(["split", "image_name"])
    for fmt in ("dicom", "tfrecord"):
        np.testing.assert_array_equal(
            np.stack(vectors[fmt]["vector"]), np.stack(vectors["jpeg"]["vector"])
        )


def test_shards_merge_to_the_single_run_result(config: Stage1Config) -> None:
    single = config.out_dir.with_name("single")
    run_stage1(replace(config, out_dir=single))
    first = run_stage1(replace(config, num_shards=2, shard_index=0))
    assert first.results[0].status == "waiting-for-shards"
    assert not (config.out_dir / "embeddings" / f"{SLUG}.parquet").exists()
    assert run_stage1(replace(config, num_shards=2, shard_index=1)).results[0].status == "computed"
    a, b = embeddings(single), embeddings(config.out_dir)
    assert a[["split", "image_name"]].equals(b[["split", "image_name"]])
    np.testing.assert_array_equal(np.stack(a["vector"]), np.stack(b["vector"]))


def test_unreadable_image_fails_the_run_unless_allowed(
    config: Stage1Config, tiny_dataset: Path
) -> None:
    path = tiny_dataset / "jpeg" / "train" / "IMG_0005.jpg"
    path.write_bytes(path.read_bytes()[:300])  # truncated: the header reads, the decode fails
    with pytest.raises(
        DataError, match=r"1 image\(s\) could not be read, more than --max-failures 0.*IMG_0005"
    ):
        run_stage1(config)
    assert not (config.out_dir / "embeddings" / f"{SLUG}.parquet").exists()
    manifest, _ = read_manifest(config.out_dir)
    assert manifest.set_index("image_name").loc["IMG_0005", "read_status"] == "failed"
    run_stage1(replace(config, max_failures=1))
    assert "IMG_0005" not in set(embeddings(config.out_dir)["image_name"])
    assert len(embeddings(config.out_dir)) == 14


def test_second_run_on_the_same_folder_is_refused(config: Stage1Config) -> None:
    config.out_dir.mkdir(parents=True)
    with (
        FileLock(str(config.out_dir / ".stage1-shard0.lock")),
        pytest.raises(OutputError, match="Another stage 1 run"),
    ):
        run_stage1(config)


def test_unwritable_output_folder(config: Stage1Config, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        with pytest.raises(OutputError, match="Cannot create output folder"):
            run_stage1(replace(config, out_dir=blocker / "out"))
    else:  # pragma: no cover - permissions only bind non-root users
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError):
            run_stage1(replace(config, out_dir=locked / "out"))


def test_metadata_only_manifest_needs_no_images(tmp_path: Path, tiny_dataset: Path) -> None:
    for folder in ("jpeg", "train", "test", "tfrecords"):
        subprocess.run(["rm", "-rf", str(tiny_dataset / folder)], check=True)
    run_stage1(Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "meta", backbones=()))
    manifest, _ = read_manifest(tmp_path / "meta")
    assert set(manifest["read_status"]) == {"not_read"} and len(manifest) == 15


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """SIGKILL in the middle of a backbone, rerun: same rows, same values, nothing duplicated."""
    demo = tmp_path / "demo"
    subprocess.run(
        [sys.executable, "-m", "stage1_embed.demo", "--out", str(demo), "--patients", "30"],
        check=True,
        cwd=REPO,
    )
    spec = f"local-dir:{lite0_dir()}"
    args = [sys.executable, "-m", "stage1_embed", "--data", str(demo), "--backbones", spec, "--format", "jpeg",
            "--chunk-size", "16", "--batch-size", "8", "--workers", "0", "--no-progress"]  # fmt: skip
    subprocess.run(
        [*args, "--out", str(tmp_path / "clean")], check=True, cwd=REPO, capture_output=True
    )
    killed = subprocess.run(  # SIGKILLs itself once its third chunk is saved
        [*args, "--out", str(tmp_path / "killed")], cwd=REPO, stderr=subprocess.DEVNULL,
        env={**os.environ, CRASH_VARIABLE: "part:3"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    parts = tmp_path / "killed" / "embeddings" / ".parts"
    n_parts = len(list(parts.glob("*/part-*.parquet")))
    assert n_parts == 3 and not (tmp_path / "killed" / "embeddings" / f"{SLUG}.parquet").exists()
    resumed = subprocess.run(
        [*args, "--out", str(tmp_path / "killed")],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    done = next(line for line in resumed.stdout.splitlines() if line.startswith(SLUG))
    n_total = len(embeddings(tmp_path / "clean"))
    assert int(done.split()[1]) < n_total  # only the unfinished chunks were embedded again
    a, b = embeddings(tmp_path / "clean"), embeddings(tmp_path / "killed")
    assert len(b) == n_total and not b.duplicated(["split", "image_name"]).any()
    assert a[["split", "image_name"]].equals(b[["split", "image_name"]])
    np.testing.assert_array_equal(np.stack(a["vector"]), np.stack(b["vector"]))


@pytest.mark.slow
def test_real_jpegs_pretrained_differs_from_random_init(isic_layout: Path, tmp_path: Path) -> None:
    """On 64 real ISIC JPEGs, pretrained embeddings are not a random network's."""
    csv = pd.read_csv(isic_layout / "train.csv").head(64)
    root = tmp_path / "subset"
    (root / "jpeg" / "train").mkdir(parents=True)
    for name in csv["image_name"]:
        (root / "jpeg" / "train" / f"{name}.jpg").symlink_to(
            (isic_layout / "jpeg" / "train" / f"{name}.jpg").resolve()
        )
    csv.to_csv(root / "train.csv", index=False)
    spec = f"local-dir:{lite0_dir()}"
    base = Stage1Config(data_dir=root, backbones=(spec,), num_workers=0, progress=False)
    run_stage1(replace(base, out_dir=tmp_path / "pre"))
    run_stage1(replace(base, out_dir=tmp_path / "rnd", random_init=True))
    pre, rnd = embeddings(tmp_path / "pre"), embeddings(tmp_path / "rnd")
    assert (
        read_provenance(tmp_path / "rnd" / "embeddings" / f"{SLUG}.parquet")["pretrained"] is False
    )
    assert np.stack(pre["vector"]).shape == np.stack(rnd["vector"]).shape == (64, 320 + 112)
    corr = np.corrcoef(np.stack(pre["vector"]).ravel(), np.stack(rnd["vector"]).ravel())[0, 1]
    assert abs(corr) < 0.5
    assert pq.read_table(tmp_path / "pre" / "manifest.parquet").num_rows == 64


def test_the_summary_counts_embedded_and_failed_images_once_each(tmp_path: Path) -> None:
    """Six images handed to a backbone, one of them undecodable, one more unreadable before it:
    5 embedded and 2 failures (issue 29: the table said 6 and 1)."""
    from stage1_embed.pipeline import Stage1Summary, format_summary
    from stage1_embed.runner import BackboneResult

    result = BackboneResult("lite0", "computed", 6, 1.0, "cpu", [("test", "bad", "truncated")])
    summary = Stage1Summary(tmp_path, 6, "jpeg", [result], n_failures=2, n_unreadable_files=1)
    row = format_summary(summary).splitlines()[1].split()
    assert row[:3] == ["lite0", "5", "2"]


@pytest.mark.parametrize("change", ["library", "code"])
def test_a_library_or_code_change_recomputes_the_embeddings(
    config: Stage1Config, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to date covers what shapes the pixels and embeddings: after `pip install -U timm` or
    an edit to stage 1's code, nothing is served from before, not even row by row (issue 30)."""
    import stage1_embed.runner as runner

    run_stage1(config)
    if change == "library":
        real = runner.library_versions
        monkeypatch.setattr(runner, "library_versions", lambda names: real(names) | {"timm": "9.9"})
    else:
        monkeypatch.setattr(runner, "code_digest", lambda *packages: "an edited crop")
    again = run_stage1(config).results[0]
    assert again.status == "computed" and again.reused is None and again.n_images == 15
