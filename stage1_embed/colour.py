"""Colour order: do a source's files store red and blue swapped?

A pipeline that writes OpenCV's BGR arrays through an RGB encoder (a common TFRecord and JPEG
mistake) leaves every image with red and blue exchanged, and nothing downstream fails: the CNNs
simply see blue skin. Dermoscopy is red-dominant: by the vote below, under 1% of the HAM10000
images are bluer than red and all of the swapped ISIC 2020 JPEGs are (benchmarks/README.md,
"Colour order"). So each image's mean blue minus
mean red over its central part (the vignetted corners left out) votes, and a source's verdict is
the share of blue-dominant images among those with a clear cast:

- ``rgb`` (stored as the format says) when at most 10% are blue-dominant,
- ``bgr`` (swapped) when at least 90% are,
- ``mixed`` in between: ``--channel-order auto`` then refuses to guess,
- ``undetermined`` when fewer than 10 images show a cast (one image, grey images, nothing
  readable): the images are used as stored, and the verdict says why.

Written by hand: no imaging library answers "is this BGR?"; it is a mean per channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .errors import ConfigError, ImageReadError
from .sources import ImageRef, ImageSource

logger = logging.getLogger(__name__)
CHANNEL_ORDERS = ("auto", "rgb", "bgr")
SAMPLE = 200  # images per source that stage 1 judges (the check command judges all)
SIDE = 64  # decoded size: a colour cast needs no detail (JPEG draft mode makes it cheap)
MARGIN = 2.0  # grey levels: an image whose blue and red means differ less shows no cast
DECISIVE = 0.9  # share of cast images that must agree for a verdict
MIN_CAST = 10  # images with a cast needed for any verdict
LISTED = 20  # disagreeing images named per source


@dataclass
class ColourVerdict:
    """One source's colour order, with the evidence: counts of blue- and red-dominant images."""

    verdict: str  # rgb | bgr | mixed | undetermined
    n_judged: int
    n_blue: int
    n_red: int
    n_unreadable: int
    blue_share: float | None  # among images with a cast
    reason: str
    disagreeing: list[str] = field(default_factory=list)  # images against the verdict

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def blue_minus_red(image: Image.Image) -> float:
    """Mean blue minus mean red, in grey levels, over the central 80% of the image."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = pixels.shape[:2]
    centre = pixels[h // 10 : h - h // 10 or h, w // 10 : w - w // 10 or w]
    return float(centre[..., 2].mean() - centre[..., 0].mean())


def judge(balances: Mapping[str, float], n_unreadable: int = 0) -> ColourVerdict:
    """The verdict from each image's blue-minus-red balance (:func:`blue_minus_red`)."""
    blue = sorted(n for n, b in balances.items() if b > MARGIN)
    red = sorted(n for n, b in balances.items() if b < -MARGIN)
    cast = len(blue) + len(red)
    share = len(blue) / cast if cast else None

    def found(verdict: str, reason: str, disagreeing: list[str] | None = None) -> ColourVerdict:
        return ColourVerdict(verdict, len(balances), len(blue), len(red), n_unreadable, share,
                             reason, (disagreeing or [])[:LISTED])  # fmt: skip

    if not balances:
        return found("undetermined", "no readable image to judge")
    if share is None or cast < MIN_CAST:
        return found("undetermined", f"only {cast} of {len(balances)} image(s) show a colour "
                     f"cast (at least {MIN_CAST} are needed): too few, or grey images")  # fmt: skip
    text = f"{len(blue)} of {cast} images with a colour cast are bluer than red ({share:.0%})"
    if share >= DECISIVE:
        return found("bgr", f"{text}: red and blue are swapped", red)
    if share <= 1 - DECISIVE:
        return found("rgb", f"{text}: natural order", blue)
    return found("mixed", f"{text}: some files are swapped, some not")


def judge_source(
    source: ImageSource, refs: Sequence[ImageRef], sample: int | None = SAMPLE
) -> ColourVerdict:
    """Decode ``sample`` images spread evenly over ``refs`` (all with None) as stored, small,
    and judge them. Unreadable images are counted, not raised: stage 1 reports them itself."""
    chosen = list(refs)
    if sample is not None and len(chosen) > sample:
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, sample).round().astype(int)]
    balances, unreadable = {}, 0
    for ref in chosen:
        try:
            image = source.decode(source.read_bytes(ref), min_side=SIDE).image
        except (ImageReadError, OSError):
            unreadable += 1
            continue
        balances[ref.image_name] = blue_minus_red(image)
    return judge(balances, unreadable)


def resolve_orders(requested: str, verdicts: Mapping[str, ColourVerdict]) -> dict[str, str]:
    """The stored order per source: what ``--channel-order rgb|bgr`` says, or with ``auto`` the
    verdict where it is decisive ('rgb' where no verdict could be reached); mixed evidence is an
    error naming the flag."""
    if requested not in CHANNEL_ORDERS:
        raise ConfigError(f"--channel-order {requested!r}: use {', '.join(CHANNEL_ORDERS)}.")
    orders = {}
    for name, found in verdicts.items():
        if requested != "auto":
            if found.verdict in ("rgb", "bgr") and found.verdict != requested:
                logger.warning("%s images: --channel-order %s, but %s (stored order %s)", name,
                               requested, found.reason, found.verdict)  # fmt: skip
            orders[name] = requested
        elif found.verdict == "mixed":
            raise ConfigError(
                f"The {name} images mix colour orders: {found.reason}. Refusing to guess: look "
                "at them (python -m stage1_embed check), then pass --channel-order rgb (stored as "
                "the format says) or --channel-order bgr (red and blue swapped), or split the "
                "folder by where the images came from."
            )
        else:
            orders[name] = "bgr" if found.verdict == "bgr" else "rgb"
            if found.verdict == "bgr":
                logger.warning("%s images store red and blue swapped (%s): swapping them back "
                               "(--channel-order rgb keeps them as stored)", name, found.reason)  # fmt: skip
            elif found.verdict == "undetermined":
                logger.info("%s images: colour order undetermined (%s); used as stored", name,
                            found.reason)  # fmt: skip
    return orders


def stored_orders(provenance: Mapping[str, Any]) -> dict[str, str]:
    """The stored order per split that stage 1 applied, from a manifest's provenance (empty
    for manifests written before colour order was checked: the images were used as stored)."""
    found = provenance.get("channel_order") or {}
    return {split: str(entry.get("stored", "rgb")) for split, entry in found.items()}
