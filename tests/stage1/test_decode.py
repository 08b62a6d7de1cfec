"""Decoding: every odd-but-valid image is handled, every broken one is a clear ImageReadError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stage1_embed.config import Stage1Config
from stage1_embed.decode import decode_image_bytes
from stage1_embed.errors import ConfigError, ImageReadError
from stage1_embed.kaggle_layout import encode_jpeg
from tests.conftest import tiny_pixels


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("LA", "PNG"),
    ],
)
def test_any_mode_decodes_to_rgb_uint8(mode: str, fmt: str) -> None:
    base = Image.fromarray(tiny_pixels(1)[0])
    if mode == "I;16":
        source = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    else:
        source = base.convert(mode)
    decoded = decode_image_bytes(encoded(source, fmt))
    array = np.asarray(decoded.image)
    assert decoded.image.mode == "RGB" and array.dtype == np.uint8 and array.shape == (48, 48, 3)


def test_16_bit_keeps_its_intensities() -> None:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    array = np.asarray(decode_image_bytes(encoded(Image.fromarray(ramp), "PNG")).image)
    assert array[0, 0, 0] == 0 and array[-1, -1, 0] == 255


def test_zero_byte_file() -> None:
    with pytest.raises(ImageReadError, match="empty"):
        decode_image_bytes(b"")


def test_truncated_jpeg() -> None:
    data = encode_jpeg(tiny_pixels(1, size=128)[0])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        decode_image_bytes(data[: len(data) // 2])


def test_text_file_named_jpg() -> None:
    with pytest.raises(ImageReadError, match="not an image"):
        decode_image_bytes(b"image_name,target\nISIC_1,0\n")


def test_decompression_bomb_guard_refuses_before_decoding() -> None:
    big = encoded(Image.new("RGB", (4000, 3000)), "JPEG")
    with pytest.raises(ImageReadError, match="12,000,000 pixels, above the limit of 1,000,000"):
        decode_image_bytes(big, max_pixels=1_000_000)


def test_draft_mode_decodes_large_jpeg_at_reduced_size() -> None:
    big = encoded(Image.new("RGB", (4000, 3000), (120, 80, 60)), "JPEG")
    decoded = decode_image_bytes(big, min_side=256)
    assert (decoded.original_width, decoded.original_height) == (4000, 3000)
    assert 256 <= min(decoded.image.size) < 750  # 1/8 scale: 500x375


@pytest.mark.parametrize(
    ("mode", "kept_columns"), [("center", False), ("squash", True), ("border", True)]
)
def test_crop_modes_follow_timm(mode: str, kept_columns: bool) -> None:
    """A 2:1 image with coloured left/right edges: 'center' cuts the edges off, the others keep them."""
    from stage1_embed.preprocess import Preprocess

    pixels = np.full((100, 200, 3), 128, np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, -10:] = (0, 0, 255)
    out = Preprocess(64, 64, "bilinear", mode)(Image.fromarray(pixels)).numpy()
    assert out.shape == (3, 64, 64)
    red_seen = (out[0] > 200).any() and (out[2] < 50).any()
    assert red_seen == kept_columns


def test_batched_torchvision_decode_on_the_cpu_matches_pil(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """The GPU decode path's logic, run on the CPU: same pixels, bad files still per-image."""
    import torch

    from stage1_embed.batch_decode import BatchDecoder, RawDataset, collate_raw
    from stage1_embed.extract import ImageDataset
    from stage1_embed.preprocess import Preprocess
    from stage1_embed.sources import create_source

    folder = tiny_dataset / "jpeg" / "train"
    (folder / "IMG_0003.jpg").write_bytes((folder / "IMG_0003.jpg").read_bytes()[:200])  # truncated
    source = create_source(tiny_dataset, image_format="jpeg")
    names = sorted(p.stem for p in folder.glob("*.jpg"))
    found = source.index({"train": set(names)})
    refs = [found[("train", n)] for n in names]
    preprocess = Preprocess(size=32, scale_size=36, interpolation="bilinear")
    raw = collate_raw([RawDataset(source, refs, preprocess)[i] for i in range(len(refs))])
    batch = BatchDecoder(source, refs, preprocess, torch.device("cpu"))(raw)
    assert [refs[i].image_name for i, _ in batch.failures] == ["IMG_0003"]
    cpu = ImageDataset(source, refs, preprocess)
    expected = torch.stack([cpu[i][1] for i in batch.indices])
    assert batch.pixels is not None and batch.pixels.shape == expected.shape
    assert (batch.pixels.int() - expected.int()).abs().float().mean() < 2.0


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_torch_resize_gives_pils_pixels(mode: str) -> None:
    """Decoded images are resized by torch's uint8 kernel: within 2 levels of PIL's antialiased
    resize on < 1% of the pixels; filters torch lacks (lanczos) stay with PIL, exactly."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from stage1_embed.preprocess import Preprocess

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (30, 45, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    image = Image.fromarray(smooth)  # 300 x 450 blocks: edges and flat areas, like a lesion
    for interpolation, tolerance in (("bicubic", 2), ("bilinear", 2), ("lanczos", 0)):
        preprocess = Preprocess(96, 110, interpolation, mode)
        target = {"center": [110], "squash": [110, 110], "border": [73, 110]}[mode]
        reference = F.pil_to_tensor(F.center_crop(
            F.resize(image, target, interpolation=InterpolationMode(interpolation), antialias=True),
            [96, 96]))  # fmt: skip
        ours = preprocess(image)
        assert ours.shape == reference.shape == (3, 96, 96) and ours.dtype == reference.dtype
        diff = (ours.int() - reference.int()).abs()
        assert int(diff.max()) <= tolerance and float((diff > 0).float().mean()) < 0.01


def test_shades_of_gray_removes_a_colour_cast_and_keeps_grey() -> None:
    import torch

    from stage1_embed.preprocess import SHADES_OF_GRAY_P, shades_of_gray

    texture = np.random.default_rng(0).integers(40, 200, (64, 64)).astype(np.float64)
    cast = np.stack([texture * 1.0, texture * 0.8, texture * 0.55])  # a warm lamp
    balanced = shades_of_gray(torch.from_numpy(cast.round().astype(np.uint8))).double()
    means = balanced.pow(SHADES_OF_GRAY_P).mean(dim=(1, 2)).pow(1 / SHADES_OF_GRAY_P)
    assert float(means.max() / means.min()) < 1.01
    grey = torch.from_numpy(np.stack([texture] * 3).astype(np.uint8))
    assert torch.equal(shades_of_gray(grey), grey)
    with pytest.raises(ConfigError, match="use none or shades-of-gray"):
        Stage1Config(colour_constancy="grey-world")
