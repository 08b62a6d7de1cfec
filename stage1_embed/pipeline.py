"""Stage 1 end to end: metadata -> scan -> one embedding file per backbone -> manifest."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from .backbones import Backbone, BackboneSpec, create_backbone, parse_backbones
from .batch_decode import resolve_decode
from .colour import judge_source, resolve_orders
from .common import atomic_path, atomic_write_text, file_sha256
from .config import Stage1Config
from .data_check import cheap_checks, write_data_check
from .engines import resolve_engine
from .errors import DataError, OutputError, WeightsError
from .extra import (
    NORMALISED_CSV,
    check_unique_sources,
    detect_extra,
    read_extra_table,
    resolve_duplicates,
)
from .metadata import load_metadata
from .runner import BackboneResult, EmbedSettings, backbone_provenance, embed_backbone, jsonable
from .scan import ScanResult, metadata_only_manifest, scan_dataset
from .schema import (
    MANIFEST_FILE,
    embeddings_path,
    extra_features_dir,
    inputs_digest,
    write_manifest,
)
from .scoring import (
    ModelBackbone,
    check_same_backbone,
    load_scoring_metadata,
    model_backbones,
    weights_missing,
)
from .shards import ShardPlan
from .sources import ImageRef, ImageSource, create_source

logger = logging.getLogger(__name__)
_LISTED = 10


@dataclass
class Stage1Summary:
    out_dir: Path
    n_images: int
    source_format: str | None
    results: list[BackboneResult] = field(default_factory=list)
    n_failures: int = 0
    complete: bool = True
    extras: list[Stage1Summary] = field(default_factory=list)  # one per --extra-data folder
    n_unreadable_files: int = 0  # failed before any backbone: missing, empty, a bad header
    colours: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> colour verdict


def run_stage1(config: Stage1Config) -> Stage1Summary:
    """Run stage 1 under a lock on the output folder (per shard)."""
    out = Path(config.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"Cannot create output folder {out}: {err.strerror}. Choose another --out."
        ) from err
    lock = FileLock(str(out / f".stage1-shard{config.shard_index}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise OutputError(
            f"Another stage 1 run is writing to {out} (lock {lock.lock_file}). Wait for it to "
            "finish, or use another --out folder."
        ) from err
    try:
        extras = _extra_configs(config, out)  # bad extra data fails before any embedding
        summary = _run_locked(config, out)
        for extra in extras:
            logger.info("extra training data %s -> %s", extra.data_dir, extra.out_dir)
            summary.extras.append(_run_locked(extra, Path(extra.out_dir)))
        summary.complete = summary.complete and all(e.complete for e in summary.extras)
        return summary
    finally:
        lock.release()


def _extra_configs(config: Stage1Config, out: Path) -> list[Stage1Config]:
    """One stage 1 config per ``--extra-data`` folder, writing to ``OUT/extra/<name>/``.

    Each extra set's rows are normalised (extra.py), checked against the primary data and the
    other extra sets for duplicate image names, and written as the CSV its run reads."""
    if not config.extra_data:
        return []
    check_unique_sources(config.extra_data)
    datasets = [detect_extra(root) for root in config.extra_data]
    primary = load_metadata(config.train_csv_path, config.test_csv_path)
    tables = resolve_duplicates(
        primary, {d.name: read_extra_table(d) for d in datasets}, config.drop_extra_duplicates
    )
    configs = []
    for dataset in datasets:
        folder = extra_features_dir(out, dataset.root)
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / NORMALISED_CSV
        with atomic_path(csv) as tmp:
            tables[dataset.name].drop(columns=["split"]).to_csv(tmp, index=False)
        configs.append(
            replace(config, data_dir=dataset.root, out_dir=folder, train_csv=csv, test_csv=None,
                    images_dir=dataset.images_dir, image_format="auto", extra_data=(),
                    train_only=True)
        )  # fmt: skip
    return configs


def check_output_folder(config: Stage1Config, out: Path) -> None:
    """Never write over another dataset's stage 1 outputs: a folder holding a manifest is reused
    only for the same kind of run (training or scoring) of the same data folder, and scoring never
    writes into the features a model was trained on."""
    previous = out / "stage1_config.json"
    if not (out / MANIFEST_FILE).is_file() or not previous.is_file():
        return
    try:
        before = json.loads(previous.read_text())
    except (OSError, json.JSONDecodeError):
        return  # a damaged record: the content digests still decide what is reused
    scoring, scored_before = config.model_dir is not None, before.get("model_dir") is not None
    data = str(config.root.resolve())
    other_data = before.get("data_dir_resolved") not in (None, data)
    if scoring == scored_before and not other_data:
        return
    what = "scores" if scored_before else "training features (the manifest and embeddings stage 2 "\
        "and its saved model were built from)"  # fmt: skip
    name = Path(data).name + ("-scored" if scoring else "")
    raise OutputError(
        f"{out} holds the {what} of {before.get('data_dir_resolved') or before.get('data_dir')}; "
        f"{'scoring' if scoring else 'training on'} {config.root} there would replace them. "
        f"Pass another --out, e.g. --out {out.parent / name}."
    )


def _run_locked(config: Stage1Config, out: Path) -> Stage1Summary:
    specs = parse_backbones(config.backbones)  # bad specs fail first
    expected = {b.slug: b for b in model_backbones(config.model_dir)} if config.model_dir else {}
    check_output_folder(config, out)
    record = asdict(config) | {"data_dir_resolved": str(config.root.resolve())}
    resolved = json.dumps(record, indent=2, default=str)  # Paths as text
    atomic_write_text(out / "stage1_config.json", resolved)
    if config.model_dir is not None:
        table, skipped = load_scoring_metadata(
            config.train_csv_path, config.test_csv_path, config.root, config.images_dir
        )
    else:
        table, skipped = load_metadata(config.train_csv_path, config.test_csv_path), None
    if not specs:
        scan = metadata_only_manifest(table)
        _write_manifest(scan, config, "metadata-only", {}, skipped)
        write_data_check(out, cheap_checks(scan.manifest, {}, out))
        return Stage1Summary(out, len(table), None)
    source = create_source(config.root, config.images_dir, config.image_format, config.max_pixels)
    scan = scan_dataset(table, source, skip_missing=config.skip_missing, out=out)
    _save_cross_check(scan, out)
    digest = inputs_digest(scan.manifest)
    refs = [scan.refs[k] for k in sorted(scan.refs)]
    colours = _channel_orders(config, source, refs)
    write_data_check(out, cheap_checks(scan.manifest, colours, out))
    settings = replace(_embed_settings(config, source.format_name),
                       channel_orders=tuple(sorted(source.channel_orders.items())))  # fmt: skip
    summary = Stage1Summary(out, len(refs), source.format_name)
    summary.n_unreadable_files = int((scan.manifest["read_status"] == "failed").sum())
    summary.colours = colours
    plan = ShardPlan(out) if config.num_shards > 1 else None
    if plan is not None:
        plan.join(config.shard_index, {"num_shards": config.num_shards, "inputs_digest":
                  digest, "backbones": [s.text for s in specs]})  # fmt: skip
    for spec in specs:
        backbone = _backbone(spec, config, expected.get(spec.slug))
        if plan is not None:  # input size, crop, TTA, weights, precision, chunk size
            provenance = backbone_provenance(backbone, settings, digest, len(refs))
            plan.join(
                config.shard_index, {f"settings of {spec.slug}": provenance["settings_digest"]}
            )
        summary.results.append(
            embed_backbone(backbone, source, refs, out, digest, settings, scan.contents)
        )
    failures = _all_failures(scan, summary.results)
    summary.n_failures = len(failures)
    summary.complete = all(r.status != "waiting-for-shards" for r in summary.results)
    _write_manifest(scan, config, digest, failures, skipped, colours)
    _check_failure_limit(failures, config.max_failures, out)
    for result in summary.results:
        if result.status == "computed" and result.parts is not None:
            _assemble_once(result, out)
    if plan is not None and summary.complete:
        plan.finish()
    if config.model_dir is not None and summary.complete:
        from .experts.score import score_model_experts

        score_model_experts(config.model_dir, out, config.root, config.images_dir,
                            config.image_format, settings.device, config.weights_dir, config.progress)  # fmt: skip
    return summary


def _channel_orders(
    config: Stage1Config, source: ImageSource, refs: list[ImageRef]
) -> dict[str, dict[str, Any]]:
    """Judge each split's colour order (a sample of its images), settle the stored order per
    split (colour.resolve_orders) and set it on ``source``; returns what the manifest records."""
    verdicts = {split: judge_source(source, [r for r in refs if r.split == split])
                for split in sorted({r.split for r in refs})}  # fmt: skip
    source.channel_orders = resolve_orders(config.channel_order, verdicts)
    return {split: v.to_json() | {"stored": source.channel_orders[split],
                                  "requested": config.channel_order}
            for split, v in verdicts.items()}  # fmt: skip


def _backbone(spec: BackboneSpec, config: Stage1Config, expected: ModelBackbone | None) -> Backbone:
    """Build one backbone (with the CLI's preprocessing, or exactly as a saved model had it) and
    say which weights it loaded."""
    backbone = _build_backbone(spec, config, expected)
    weights = backbone.weights
    logger.info("%s: %s weights from %s (sha256 %s)", spec.slug, weights.source,
                weights.location or weights.model_name, (weights.sha256 or "-")[:12])  # fmt: skip
    return backbone


def _build_backbone(
    spec: BackboneSpec, config: Stage1Config, expected: ModelBackbone | None
) -> Backbone:
    if expected is None:
        return create_backbone(
            spec, config.weights_dir, allow_random=config.allow_random_init,
            random_init=config.random_init, input_size=config.input_size,
            crop_pct=config.crop_pct, crop_mode=config.crop_mode,
            colour_constancy=config.colour_constancy, pooling=config.pooling, stages=config.stages,
            stage_pooling=config.stage_pooling,
        )  # fmt: skip
    preprocessing = expected.preprocessing
    try:
        backbone = create_backbone(
            spec, config.weights_dir, input_size=expected.input_size,
            crop_pct=preprocessing.get("crop_pct"), crop_mode=preprocessing.get("crop_mode"),
            colour_constancy=preprocessing.get("colour_constancy"),
            pooling=preprocessing.get("global_pool"), stages=tuple(preprocessing.get("stages") or ()),
            stage_pooling=preprocessing.get("stage_pooling"),
        )  # fmt: skip
    except WeightsError as err:
        raise weights_missing(expected, err) from None
    check_same_backbone(expected, backbone.weights.sha256, jsonable(backbone.data_config))
    return backbone


def _assemble_once(result: BackboneResult, out: Path) -> None:
    """Shards finishing together must not both assemble: the first one does, under a lock."""
    assert result.parts is not None
    with FileLock(str(result.parts.folder) + ".lock"):
        if result.parts.folder.is_dir():
            provenance = {**result.provenance, "failures": [list(f) for f in result.failures]}
            result.parts.assemble(embeddings_path(out, result.slug), provenance, result.reused)


def _embed_settings(config: Stage1Config, source_format: str | None = None) -> EmbedSettings:
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OutputError(
            "--device cuda was asked for, but torch sees no CUDA device; use --device cpu."
        )
    precision = config.precision
    if not device.startswith("cuda"):
        precision = "fp32"  # autocast is used on CUDA only
    elif precision == "auto":
        precision = "bf16"
    engine = resolve_engine(config.engine, device)
    # ONNX Runtime on a CPU decodes in a thread per core (cpu_pipeline.py), not worker processes.
    workers = 0 if engine == "onnx" and config.num_workers is None else config.workers_for(device)
    return EmbedSettings(
        batch_size=config.batch_size,
        num_workers=workers,
        chunk_size=config.chunk_size,
        device=device,
        precision=precision,
        engine=engine,
        decode=resolve_decode(config.decode, device, source_format),
        tta=config.tta,
        num_shards=config.num_shards,
        shard_index=config.shard_index,
        progress=config.progress,
    )


def _all_failures(scan: ScanResult, results: list[BackboneResult]) -> dict[tuple[str, str], str]:
    """Images that could not be read: header failures plus decode failures of any backbone."""
    failed = scan.manifest[scan.manifest["read_status"] == "failed"]
    keys = zip(failed["split"], failed["image_name"], strict=True)
    found = dict(zip(keys, failed["read_error"], strict=True))
    for result in results:
        for split, name, error in result.failures:
            found.setdefault((split, name), error)
    return found


def _write_manifest(
    scan: ScanResult, config: Stage1Config, digest: str,
    failures: dict[tuple[str, str], str], skipped: list[str] | None = None,
    colours: dict[str, dict[str, Any]] | None = None,
) -> None:  # fmt: skip
    """The manifest; ``skipped``: a folder with no CSV was scored (patients made from image
    names), with notes on the files it left out."""
    manifest = scan.manifest.copy()
    errors = pd.Series(failures, dtype=object)
    if len(errors):
        keys = pd.MultiIndex.from_frame(manifest[["split", "image_name"]])
        failed = keys.isin(errors.index)
        manifest.loc[failed, "read_status"] = "failed"
        manifest.loc[failed, "read_error"] = errors.reindex(keys[failed]).to_numpy()
    has_train = Path(config.train_csv_path).is_file()
    provenance = {
        "inputs_digest": digest,
        "dataset": config.dataset_name,
        "train_csv": str(Path(config.train_csv_path).resolve()) if has_train else None,
        "train_csv_sha256": file_sha256(config.train_csv_path) if has_train else None,
        "patients_from_image_names": skipped is not None,
        "skipped_files": skipped or [],
        "test_csv": str(config.test_csv_path) if config.test_csv_path else None,
        "backbones": list(config.backbones),
        "n_dropped_missing": scan.n_dropped_missing,
        "channel_order": colours or {},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_manifest(manifest, config.out_dir, provenance)


def _check_failure_limit(failures: dict[tuple[str, str], str], limit: int, out: Path) -> None:
    if len(failures) <= limit:
        for (split, name), error in list(failures.items())[:_LISTED]:
            logger.warning("image %s/%s could not be read: %s", split, name, error)
        return
    listed = "; ".join(f"{s}/{n}: {e}" for (s, n), e in list(failures.items())[:_LISTED])
    raise DataError(
        f"{len(failures)} image(s) could not be read, more than --max-failures {limit}: {listed}"
        f"{' ...' if len(failures) > _LISTED else ''}. The list is in {out}/manifest.parquet "
        "(read_status = failed). Fix or remove those files, or rerun with --max-failures N to "
        "write embeddings for the images that worked (finished work is kept and reused)."
    )


def _save_cross_check(scan: ScanResult, out: Path) -> None:
    found = [
        {"column": d.column, "count": d.count, "examples": d.examples} for d in scan.disagreements
    ]
    atomic_write_text(out / "metadata_check.json", json.dumps(found, indent=2))


def format_summary(summary: Stage1Summary) -> str:
    """The end-of-run table: backbone, images embedded this run, images it could not read
    (before decoding or while decoding), seconds, images/s, device, status."""
    lines = [
        f"{'backbone':<32} {'embedded':>8} {'failures':>8} {'seconds':>8} {'img/s':>7}  device  status"
    ]
    for r in summary.results:
        speed = f"{r.images_per_second:>7.1f}" if r.n_images else f"{'-':>7}"
        decoded = r.n_images - len(r.failures) if r.status == "computed" else r.n_images
        failures = summary.n_unreadable_files + len(r.failures)
        lines.append(
            f"{r.slug:<32} {decoded:>8} {failures:>8} {r.seconds:>8.1f} "
            f"{speed}  {r.device:<6}  {r.status}"
        )
    lines.append(
        f"features: {summary.out_dir} ({summary.n_images} images, {summary.n_failures} unreadable)"
    )
    for split, entry in summary.colours.items():
        if entry["stored"] == "bgr" or entry["verdict"] != "rgb":
            action = "swapped back to RGB" if entry["stored"] == "bgr" else "used as stored"
            lines.append(f"colours of the {split} images: {entry['verdict']} ({entry['reason']}); "
                         f"{action}")  # fmt: skip
    for extra in summary.extras:
        lines.append(f"extra training data ({extra.out_dir}):")
        lines.append(format_summary(extra))
    return "\n".join(lines)
