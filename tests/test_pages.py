"""report.html and predictions.html of the demo, opened in headless Chromium from file:// with
the network off; thumbnails of one image alike in every format.

The browser tests need Debian's ``chromium`` (``.ci/run`` installs it when absent) and the
``playwright`` package (the test extra) to drive it; they skip, saying which is missing, where
either cannot be had. Screenshots go to ``build/screenshots/`` (or $MELANOMA_SCREENSHOTS)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage1_embed.thumbnails import make_thumbnails
from stage2_boost.galleries import GALLERY_SIZE
from stage2_boost.model.predict import run_predict
from tests.conftest import REPO, lite0_dir

pytestmark = pytest.mark.slow
SCREENSHOTS = Path(os.environ.get("MELANOMA_SCREENSHOTS", REPO / "build" / "screenshots"))


@pytest.fixture(scope="module")
def demo_run(demo_model: dict[str, Path]) -> dict[str, Path]:
    """The demo run of conftest, its test images scored with --explain."""
    scored = demo_model["root"] / "scored"
    run_predict(demo_model["model"], demo_model["features"], scored, explain=True)
    return demo_model | {"predictions": scored / "predictions.html"}


def browser() -> tuple[Any, str]:
    """Playwright driving Debian's Chromium, or a skip saying what is missing."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    return sync_api, executable


def open_offline(path: Path, screenshot: str) -> dict:
    """Load ``path`` with every network request refused; what a reviewer would check by eye."""
    sync_api, executable = browser()
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        context = chromium.new_context(viewport={"width": 1200, "height": 900}, offline=True)
        requests: list[str] = []
        context.route("**/*", lambda route: (requests.append(route.request.url), route.abort())
                      if not route.request.url.startswith(("file:", "data:")) else route.continue_())  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri(), wait_until="load")
        found = page.evaluate("""() => ({
            images: document.images.length,
            broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
            cards: document.querySelectorAll('figure.card').length,
            galleries: Array.from(document.querySelectorAll('.gallery')).map(g => g.querySelectorAll('figure.card').length),
            patients: document.querySelectorAll('.patient').length,
            unreadable: document.querySelectorAll('figure.card.unreadable').length,
            rows: document.querySelectorAll('table tbody tr').length,
        })""")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / screenshot
        page.screenshot(path=str(shot))
        page.fill("#filter", "no-such-patient") if page.query_selector("#filter") else None
        found["visible_after_filter"] = page.evaluate(
            "() => Array.from(document.querySelectorAll('.patient')).filter(p => p.offsetParent !== null).length"
        )
        chromium.close()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    return found | {"errors": errors, "requests": requests, "pixel_std": float(pixels.std()),
                    "screenshot": shot}  # fmt: skip


def test_report_html_opens_offline_with_every_image_and_gallery(demo_run: dict[str, Path]) -> None:
    found = open_offline(demo_run["report"], "report.png")
    assert found["errors"] == [] and found["requests"] == []
    assert found["images"] > 2 * GALLERY_SIZE and found["broken"] == 0
    missed, flagged = found["galleries"][:2]
    assert missed == GALLERY_SIZE and flagged == GALLERY_SIZE
    assert 1 <= found["patients"] <= 4 and found["rows"] >= 7 + 3  # metrics and feature groups
    assert found["pixel_std"] > 10, f"blank screenshot? {found['screenshot']}"


def test_predictions_html_shows_every_scored_image(demo_run: dict[str, Path]) -> None:
    found = open_offline(demo_run["predictions"], "predictions.png")
    scored = pd.read_csv(demo_run["predictions"].parent / "predictions.csv")
    assert found["errors"] == [] and found["requests"] == []
    assert found["cards"] == len(scored) and found["images"] == len(scored) and found["broken"] == 0
    assert found["patients"] == scored["patient_id"].nunique()
    assert found["visible_after_filter"] == 0  # the filter box hides what does not match
    assert found["pixel_std"] > 10, f"blank screenshot? {found['screenshot']}"


def test_unreadable_images_are_shown_with_their_error_and_no_probability(
    demo_run: dict[str, Path], tmp_path: Path
) -> None:
    demo = demo_run["demo"]
    fresh = tmp_path / "clinic"
    (fresh / "jpeg" / "test").mkdir(parents=True)
    shutil.copy(demo / "test.csv", fresh / "test.csv")
    names = pd.read_csv(demo / "test.csv")["image_name"].tolist()
    for name in names:
        shutil.copy(demo / "jpeg" / "test" / f"{name}.jpg", fresh / "jpeg" / "test")
    (fresh / "jpeg" / "test" / f"{names[0]}.jpg").write_bytes(b"not a jpeg")
    model = demo_run["features"] / "stage2" / "model"
    done = subprocess.run(["./run_all.sh", "--model", str(model), "--data", str(fresh), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    html = (tmp_path / "out" / "predictions.html").read_text()
    assert html.count('class="card unreadable"') == 1 and "no probability" in html
    found = open_offline(tmp_path / "out" / "predictions.html", "predictions-unreadable.png")
    assert found["unreadable"] == 1 and found["broken"] == 0 and found["errors"] == []


def test_thumbnails_of_one_image_look_alike_in_every_format(demo_run: dict[str, Path]) -> None:
    demo, root = demo_run["demo"], demo_run["root"]
    spec = f"local-dir:{lite0_dir()}"
    name = pd.read_csv(demo / "train.csv")["image_name"].iloc[0]
    thumbs = {}
    for image_format in ("jpeg", "dicom", "tfrecord"):
        out = root / f"thumbs-{image_format}"
        run_stage1(Stage1Config(data_dir=demo, out_dir=out, backbones=(spec,),
                                image_format=image_format, num_workers=0, progress=False))  # fmt: skip
        made = make_thumbnails(out, [("train", name)])[("train", name)]
        assert isinstance(made, bytes), made
        thumbs[image_format] = np.asarray(Image.open(io.BytesIO(made)).convert("RGB"), dtype=float)
    for image_format in ("dicom", "tfrecord"):
        assert thumbs[image_format].shape == thumbs["jpeg"].shape
        assert np.abs(thumbs[image_format] - thumbs["jpeg"]).mean() < 2.0, image_format


def test_a_rerun_reuses_the_thumbnails_it_made(
    demo_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stage2_boost import galleries
    from stage2_boost.cache import ContentCache
    from stage2_boost.data import load_stage_data

    data = load_stage_data(demo_run["features"], None)
    names = list(data.frame["image_name"][:5])
    cache = ContentCache(tmp_path / "cache")
    calls = []
    real = galleries.make_thumbnails
    monkeypatch.setattr(galleries, "make_thumbnails", lambda *a: calls.append(a) or real(*a))
    first = galleries.cached_thumbnails(cache, demo_run["features"], data, names)
    again = galleries.cached_thumbnails(cache, demo_run["features"], data, names)
    assert len(calls) == 1 and first == again and all(isinstance(v, bytes) for v in again.values())


def test_data_check_html_opens_offline_with_every_image(tiny_dataset: Path, tmp_path: Path) -> None:
    """The check command's page: every thumbnail decodes, nothing is fetched."""
    from stage1_embed.check import run_check

    train = pd.read_csv(tiny_dataset / "train.csv")
    folder = tiny_dataset / "jpeg" / "train"
    shutil.copy(folder / f"{train['image_name'][0]}.jpg", folder / f"{train['image_name'][5]}.jpg")
    run_check(Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "check"))
    found = open_offline(tmp_path / "check" / "data_check.html", "data_check.png")
    assert found["errors"] == [] and found["requests"] == []
    assert found["images"] >= 2 + 2 * 3 and found["broken"] == 0  # the pair, colour samples
    assert found["rows"] >= 2  # the colour table: train and test
    assert found["pixel_std"] > 10, f"blank screenshot? {found['screenshot']}"
