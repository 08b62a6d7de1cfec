"""Images of one lesion that are not byte-identical: a second shot, moved, turned or zoomed.

CNN embeddings alone cannot tell them (on HAM10000's lesions the best cosine threshold found 15%
of same-lesion pairs at 61% precision: many nevi look alike to an ImageNet network); perceptual
hashes did no better. Two shots of one lesion share its pattern point for point, so each
candidate pair is checked geometrically: OpenCV's ORB keypoints, descriptors matched both ways
with Lowe's ratio test, and a similarity transform (shift, rotation, scale) fitted by OpenCV's
RANSAC; a pair whose transform explains ``MIN_INLIERS`` matches is one lesion. The candidates are
each image's ``NEIGHBOURS`` nearest images by embedding cosine among images of the same sex, age
and site (the metadata of one lesion's shots agree), which keeps the geometric check to a few
dozen pairs per image. Measured on ``ham10000_lesions`` (benchmarks/README.md, same-lesion pairs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

logger = logging.getLogger(__name__)

SIDE = 256  # keypoints are found on the grey image at most this many pixels on its longer side
KEYPOINTS = 200
FAST_THRESHOLD = 10  # OpenCV's default 20 finds too few corners on smooth skin
PATCH = 19  # descriptor patch (and border) in pixels: OpenCV's 31 drops corners near the edge
NEIGHBOURS = 20  # candidates per image: nearest by embedding cosine within its metadata block
RATIO = 0.8  # Lowe's ratio test on the Hamming distances
MIN_INLIERS = 6  # matches a similarity transform must explain (threshold table: benchmarks)
BLOCK_FIELDS = ("sex", "age_approx", "anatom_site_general_challenge")

Keypoints = tuple[np.ndarray, np.ndarray]  # (x, y) positions, packed 256-bit descriptors (n x 32)


def keypoints(image: Image.Image) -> Keypoints:
    """ORB keypoints of the grey image (none for a flat image)."""
    grey = image.convert("L")
    grey.thumbnail((SIDE, SIDE))
    detector = cv2.ORB.create(
        nfeatures=KEYPOINTS, fastThreshold=FAST_THRESHOLD, edgeThreshold=PATCH, patchSize=PATCH
    )
    found, descriptors = detector.detectAndCompute(np.asarray(grey), None)
    if descriptors is None:  # no corner at all: an all-grey image
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return np.array([point.pt for point in found], np.float32), descriptors


def inliers(a: Keypoints, b: Keypoints) -> int:
    """How many of the two images' matched keypoints one similarity transform explains."""
    (points_a, bits_a), (points_b, bits_b) = a, b
    if len(points_a) < 3 or len(points_b) < 3:
        return 0
    # Hamming distances as one matrix product of the descriptors' +-1 forms (faster than
    # OpenCV's BFMatcher run both ways, which the mutual check and the ratio test would need)
    signs_a, signs_b = (
        np.unpackbits(bits, axis=1).astype(np.float32) * 2 - 1 for bits in (bits_a, bits_b)
    )
    distance = (signs_a.shape[1] - signs_a @ signs_b.T) / 2
    best_b, best_a = distance.argmin(axis=1), distance.argmin(axis=0)
    mutual = np.flatnonzero(best_a[best_b] == np.arange(len(best_b)))
    second = np.partition(distance, 1, axis=1)[:, 1]
    kept = mutual[distance[mutual, best_b[mutual]] < RATIO * second[mutual]]
    if len(kept) < MIN_INLIERS:  # too few matches for the transform to explain enough
        return 0
    transform, found = cv2.estimateAffinePartial2D(
        points_a[kept], points_b[best_b[kept]], method=cv2.RANSAC, ransacReprojThreshold=3
    )
    return 0 if transform is None else int(found.sum())


def candidate_pairs(frame: pd.DataFrame, vectors: np.ndarray) -> np.ndarray:
    """Row pairs (i < j) to check: each row's ``NEIGHBOURS`` nearest rows by cosine among rows
    with the same metadata (missing values form their own block); rows without a vector (NaN)
    are left out."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    fields = [f for f in BLOCK_FIELDS if f in frame.columns]
    blocks = (
        frame[fields].astype(str).agg("|".join, axis=1) if fields else pd.Series("", frame.index)
    )
    usable = ~np.isnan(unit).any(axis=1)
    pairs = []
    for rows in blocks[usable].groupby(blocks[usable]).indices.values():
        rows = np.flatnonzero(usable)[rows]
        if len(rows) < 2:
            continue
        similarity = unit[rows] @ unit[rows].T
        np.fill_diagonal(similarity, -np.inf)
        k = min(NEIGHBOURS, len(rows) - 1)
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        for i, js in zip(rows, rows[nearest], strict=True):
            pairs += [(min(i, j), max(i, j)) for j in js]
    return np.unique(np.array(pairs, dtype=np.int64).reshape(-1, 2), axis=0)


def same_lesion_pairs(
    frame: pd.DataFrame, vectors: np.ndarray, load: Callable[[int], Image.Image | None]
) -> list[dict[str, Any]]:
    """Pairs of rows of ``frame`` that show one lesion, with their inlier count; ``load(row)``
    gives a row's image (None if unreadable)."""
    pairs = candidate_pairs(frame, vectors)
    found: dict[int, Keypoints] = {}
    out = []
    for done, (i, j) in enumerate(pairs, 1):
        for row in (i, j):
            if row not in found:
                image = load(int(row))
                found[row] = keypoints(image) if image is not None else keypoints(_FLAT)
        n = inliers(found[i], found[j])
        if n >= MIN_INLIERS:
            out.append({"row_a": int(i), "row_b": int(j), "inliers": n})
        if done % 20_000 == 0:
            logger.info("same-lesion check: %d of %d candidate pairs", done, len(pairs))
    return out


_FLAT = Image.new("L", (8, 8))
