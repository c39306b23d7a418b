"""AFLW2000-3D (Zhu, Lei, Liu, Shi, Li, "Face Alignment Across Large Poses: A 3D Solution", CVPR 2016; images
from AFLW, Koestinger et al., ICCV Workshops 2011) from ``AFLW2000-3D.zip`` or its ``AFLW2000/`` folder: each
``imageXXXXX.jpg`` with its ``imageXXXXX.mat`` (``Pose_Para``: pitch, yaw, roll in radians, then translation and
scale; ``pt3d_68``: the 68 landmarks). Every ``.mat`` is read (and checked) before any image is decoded."""

from __future__ import annotations

import io
import re

import numpy as np
import scipy.io

from etlbench.errors import DatasetError
from etlbench.prepare.archives import Source
from etlbench.prepare.common import (
    SEED,
    SPLIT_NAMES,
    Converted,
    decode_all,
    log,
    random_split,
    strings,
    unique_basenames,
)

_STEM = re.compile(r"^(image\d+)\.(jpg|mat)$")
ANGLES = ("yaw", "pitch", "roll")
VALID_DEGREES = 99.0  # the usual evaluation subset: every angle within +-99 degrees


def convert(source: Source, *, size: int = 64, seed: int = SEED + 2, split: tuple[float, ...] = (0.7, 0.1, 0.2),
            box_scale: float = 1.35, box_shift: float = 0.1) -> Converted:
    """AFLW2000-3D at ``size`` px RGB. The crop: the bounding box of the x, y of ``pt3d_68``, its centre moved up
    by ``box_shift`` of its height, a square of side ``box_scale`` x max(width, height) (``crop_box``, float32, as
    computed); its corners rounded to whole pixels for the crop (outside the image: black), resized with PIL
    LANCZOS. ``landmarks68``: the points relative to ``crop_box``'s corner, times ``size`` over the rounded crop's
    width. ``pose``: (yaw, pitch, roll) in degrees from ``Pose_Para``, signs unchanged; ``pose_valid99``: all
    within +-99. Split: ``random_split`` from ``numpy.random.default_rng(seed)`` over the files sorted by name."""
    files: dict[str, dict[str, str]] = {}
    ours = [n for n in source.names() if _STEM.match(n.rsplit("/", 1)[-1])]
    for base, member in unique_basenames(source, ours).items():
        stem, kind = _STEM.match(base).groups()
        files.setdefault(stem, {})[kind] = member
    if not files:
        raise DatasetError(f"{source.path}: no AFLW2000-3D files (imageXXXXX.jpg with imageXXXXX.mat)")
    for stem, pair in sorted(files.items()):
        if len(pair) != 2:
            have, lacks = next(iter(pair.items())), "mat" if "jpg" in pair else "jpg"
            raise DatasetError(f"{source.where(have[1])}: has no {stem}.{lacks} beside it (each image needs its "
                               f"labels in {stem}.mat)")
    stems = sorted(files)
    log(f"{source.path}: reading {len(stems):,} .mat files")
    labels = [_labels(source, files[stem]["mat"]) for stem in stems]
    pose = np.stack([np.degrees(p[[1, 0, 2]].astype(np.float64)) for p, _ in labels]).astype(np.float32)
    boxes, pixel_boxes, landmarks = zip(*(_crop(points, size, box_scale, box_shift) for _, points in labels),
                                        strict=True)
    log(f"{source.path}: decoding {len(stems):,} images")
    images = decode_all(source, [files[stem]["jpg"] for stem in stems], size, "rgb", box=lambda i: pixel_boxes[i])
    return Converted({
        "images": images,
        "pose": pose,
        "pose_valid99": (np.abs(pose) <= VALID_DEGREES).all(1),
        "pose_para": np.stack([p for p, _ in labels]).astype(np.float32),
        "landmarks68": np.stack(landmarks),
        "crop_box": np.stack(boxes),
        "split": random_split(len(stems), split, np.random.default_rng(seed)),
        "pose_names": strings(ANGLES),
        "split_names": strings(SPLIT_NAMES),
        "source_file": strings(stems),
    })


def _labels(source: Source, member: str) -> tuple[np.ndarray, np.ndarray]:
    """``Pose_Para`` (7 values) and the x, y of ``pt3d_68`` (2 x 68) of one ``.mat``, checked, in the file's own
    float type (3 of the 2,000 files hold float64, the rest float32)."""
    where = source.where(member)
    try:
        mat = scipy.io.loadmat(io.BytesIO(source.read(member)), variable_names=("Pose_Para", "pt3d_68"))
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError) as err:
        raise DatasetError(f"{where}: not a readable MATLAB file ({str(err).strip()[:160]})") from err
    for key in ("Pose_Para", "pt3d_68"):
        if key not in mat:
            raise DatasetError(f"{where}: no {key!r} (the labels of its image)")
    pose_para, points = np.asarray(mat["Pose_Para"]).reshape(-1), np.asarray(mat["pt3d_68"])
    if pose_para.dtype.kind != "f" or points.dtype != pose_para.dtype:
        raise DatasetError(f"{where}: expected Pose_Para and pt3d_68 as floats of one type, got {pose_para.dtype} "
                           f"and {points.dtype}")
    if pose_para.shape != (7,) or points.ndim != 2 or points.shape[0] < 2 or points.shape[1] != 68:
        raise DatasetError(f"{where}: expected Pose_Para of 7 values and pt3d_68 of 3 x 68, got "
                           f"{mat['Pose_Para'].shape} and {mat['pt3d_68'].shape}")
    if not (np.isfinite(pose_para).all() and np.isfinite(points[:2]).all()):
        raise DatasetError(f"{where}: Pose_Para or pt3d_68 holds values that are not finite")
    return pose_para, points[:2]


def _crop(points: np.ndarray, size: int, scale: float, shift: float
          ) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """The crop box, its rounded pixel box and the landmarks in the ``size`` px crop, computed in the points' own
    float type (as the staged file was made; stored as float32)."""
    f = points.dtype.type
    (x0, y0), (x1, y1) = points.min(1), points.max(1)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / f(2), (y0 + y1) / f(2) - f(shift) * h
    side = f(scale) * max(w, h)
    box = np.array([cx - side / f(2), cy - side / f(2), cx + side / f(2), cy + side / f(2)], f)
    pixel_box = tuple(round(float(v)) for v in box)  # half to even, as Python rounds
    landmarks = (points.T - box[:2]) * (f(size) / f(pixel_box[2] - pixel_box[0]))
    return box.astype(np.float32), pixel_box, landmarks.astype(np.float32)
