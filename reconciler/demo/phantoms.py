"""The synthetic chest: tissue labels of axial slices and the projection of a radiograph.

Pure functions of coordinates in mm, so an image depends only on where it is taken, never on how
many others a run generates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Labels of the axial phantom; each axial series maps them to HU or MR signal."""

    AIR = 0
    FAT = 1
    SOFT = 2
    LUNG = 3
    BONE = 4
    CSF = 5
    BLOOD = 6
    ARTERY = 7


@dataclass(frozen=True)
class ChestView:
    """Projection geometry in mm: (centre u, centre v, half width, half height) ellipsoids."""

    trunk_half_width: float
    lungs: tuple[tuple[float, float, float, float], ...]
    heart: tuple[float, float, float, float]
    spine_u: float


PA = ChestView(165, ((-80, -10, 65, 135), (82, -5, 60, 130)), (28, 75, 78, 62), 0)
AP = ChestView(165, ((-80, -10, 65, 130), (82, -5, 60, 125)), (30, 72, 90, 68), 0)
LAT = ChestView(135, ((0, -5, 105, 140),), (-45, 70, 70, 65), 95)


def _bump(t: float, start: float, end: float) -> float:
    """0 outside (start, end), 1 midway: an organ's relative size at chest fraction ``t``."""
    if not start < t < end:
        return 0.0
    return math.sqrt(math.sin(math.pi * (t - start) / (end - start)))


def _inside(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def axial_labels(x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    """Tissue labels of the axial slice at fraction ``t`` of the chest, from apex to base.

    x runs to the patient's left and y to the back (LPS), in mm; later shapes paint over
    earlier ones.
    """
    labels = np.full(np.broadcast_shapes(x.shape, y.shape), Tissue.AIR, dtype=np.uint8)
    labels[_inside(x, y, 0, 10, 165, 115)] = Tissue.FAT
    labels[_inside(x, y, 0, 10, 152, 102)] = Tissue.SOFT
    lung = _bump(t, 0.0, 1.0)
    if lung:
        labels[_inside(x, y, -78, 0, 58 * lung, 72 * lung)] = Tissue.LUNG
        labels[_inside(x, y, 80, 0, 52 * lung, 70 * lung)] = Tissue.LUNG
        labels[_ribs(x, y, t)] = Tissue.BONE
    heart = _bump(t, 0.45, 1.0)
    if heart:
        labels[_inside(x, y, 22, -30, 62 * heart, 48 * heart)] = Tissue.BLOOD
    labels[_inside(x, y, 22, 38, 13, 13)] = Tissue.ARTERY  # descending aorta
    labels[_inside(x, y, 0, -85, 14, 7)] = Tissue.BONE  # sternum
    labels[_inside(x, y, 0, 62, 19, 17)] = Tissue.BONE  # vertebral body
    labels[_inside(x, y, 0, 92, 15, 14)] = Tissue.BONE  # posterior arch
    labels[_inside(x, y, 0, 90, 8, 8)] = Tissue.CSF  # spinal canal
    return labels


def _ribs(x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    """Rib cross-sections along the chest wall; they drift round it along z as ribs slope."""
    ring = (x / 140) ** 2 + ((y - 10) / 92) ** 2
    angle = np.arctan2(y - 10, x)
    return (np.abs(ring - 0.9) < 0.06) & (np.cos(9 * angle + 40 * t) > 0.4)


def _dome(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    """Thickness of an ellipsoid seen in projection, 1 at its centre: soft edges for free."""
    return np.sqrt(np.clip(1 - ((u - cu) / au) ** 2 - ((v - cv) / av) ** 2, 0, 1))


def radiograph(u: np.ndarray, v: np.ndarray, view: ChestView) -> np.ndarray:
    """A chest radiograph in 12-bit MONOCHROME2: brighter where more tissue is crossed.

    u runs across the image and v down it, in mm from the centre.
    """
    shoulders = np.clip(-(v + 120), 0, None) / 90  # the trunk rounds off above the shoulders
    trunk = np.sqrt(np.clip(1 - (u / view.trunk_half_width) ** 2 - shoulders**2, 0, 1))
    neck = np.sqrt(np.clip(1 - (u / 55) ** 2, 0, 1)) * (v < -150)
    trunk = np.maximum(trunk, neck)
    lungs = np.minimum(sum(_dome(u, v, *lung) for lung in view.lungs), 1)
    heart = _dome(u, v, *view.heart)
    spine = np.sqrt(np.clip(1 - ((u - view.spine_u) / 20) ** 2, 0, 1)) * trunk
    # Posterior ribs: bands that curve down towards the sides, spaced about 4 cm apart.
    bands = np.clip((np.cos(2 * np.pi * (v - 0.004 * u**2) / 38) - 0.55) / 0.45, 0, 1)
    ribs = bands * (trunk > 0) * (np.abs(u - view.spine_u) > 15) * ((v > -170) & (v < 130))
    return 150 + 2000 * trunk - 1500 * lungs + 700 * heart + 900 * spine + 450 * ribs
