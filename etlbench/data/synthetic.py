"""Procedural face-like images: the embedded default dataset used when no real data is given.

:func:`make_synthetic_faces` draws ``n`` faces from a seed, entirely in vectorised numpy, and returns the
canonical dataset arrays (the same keys as the real datasets) with labels for all four face tasks:

* **identity** fixes skin tone, face width/height, eye spacing, eye and hair colour, hair length, jaw width,
  beard, gender and a base age (each image jitters the age by a year or two);
* **pose** (yaw, pitch, roll in degrees): yaw shifts and foreshortens the inner features horizontally and
  narrows the face on the side it turns to, pitch does the same vertically, roll rotates the whole head;
* **emotion** (FER2013's seven classes): brow height and tilt, eye opening, mouth curvature, opening, width
  and asymmetry, at a random intensity plus per-image noise;
* **age**: forehead, crow's-feet and nasolabial wrinkles, grey-hair fraction, child proportions
  (larger eyes set lower, rounder face);
* **gender**: hair length, jaw width, brow thickness, beard, lipstick.

Backgrounds, lighting, brightness/contrast, translation, scale and sensor noise vary per image so that no
label can be read from a single pixel. Splits are by identity (stratified by gender); verification pairs
are drawn among test images in ten identity-disjoint folds, balanced between same and different.
"""

from __future__ import annotations

import numpy as np

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
N_FOLDS = 10
PAIRS_PER_FOLD_AND_CLASS = 30
_CHUNK = 128  # images rendered at once: bounds memory and keeps arrays cache-friendly

# Expression parameters per emotion (FER2013 order): brow raise (face-height units, + up), brow tilt
# (+ inner ends up), eye opening (x neutral), mouth curvature (+ smile), mouth opening, mouth width
# (x neutral), mouth asymmetry (one corner raised).
_EXPR_KEYS = ("brow_raise", "brow_tilt", "eye_open", "mouth_curve", "mouth_open", "mouth_width", "mouth_asym")
_EXPRESSIONS = np.array(
    [
        [-0.09, -0.60, 0.80, -0.05, 0.00, 0.85, 0.00],  # angry: lowered V brows, tight flat mouth
        [-0.05, -0.20, 0.55, -0.12, 0.04, 0.95, 0.14],  # disgust: squint, lopsided downturned mouth
        [0.10, 0.50, 1.50, -0.04, 0.09, 1.25, 0.00],  # fear: raised inner brows, wide eyes, stretched mouth
        [0.02, 0.00, 0.70, 0.20, 0.06, 1.30, 0.00],  # happy: wide upturned mouth, narrowed eyes
        [0.04, 0.65, 0.75, -0.16, 0.00, 0.90, 0.00],  # sad: inner brows up, downturned mouth
        [0.18, 0.05, 1.60, 0.00, 0.20, 0.70, 0.00],  # surprise: high brows, wide eyes, round open mouth
        [0.00, 0.00, 1.00, 0.00, 0.00, 1.00, 0.00],  # neutral
    ],
    dtype=np.float32,
)
_EXPR_NOISE = np.array([0.015, 0.08, 0.08, 0.015, 0.01, 0.06, 0.02], dtype=np.float32)

_SKIN_LIGHT = np.array([0.96, 0.80, 0.68], dtype=np.float32)
_SKIN_DARK = np.array([0.35, 0.22, 0.13], dtype=np.float32)
_HAIR_PALETTE = np.array(
    [
        [0.07, 0.06, 0.05],
        [0.22, 0.14, 0.08],
        [0.42, 0.28, 0.15],
        [0.78, 0.63, 0.36],
        [0.58, 0.24, 0.10],
        [0.90, 0.84, 0.66],
        [0.65, 0.52, 0.38],
    ],
    dtype=np.float32,
)
_EYE_PALETTE = np.array(
    [[0.30, 0.18, 0.08], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.12, 0.08, 0.05]], dtype=np.float32
)
_GREY = np.array([0.80, 0.80, 0.80], dtype=np.float32)
_SCLERA = np.array([0.95, 0.95, 0.93], dtype=np.float32)
_LIPS = np.array([0.70, 0.35, 0.33], dtype=np.float32)
_LIPSTICK = np.array([0.75, 0.08, 0.18], dtype=np.float32)
_MOUTH_INSIDE = np.array([0.25, 0.05, 0.06], dtype=np.float32)

Params = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------------- public


def make_synthetic_faces(
    n: int = 2000,
    size: int = 64,
    seed: int = 0,
    n_identities: int | None = None,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> dict[str, np.ndarray]:
    """Generate ``n`` synthetic ``size`` x ``size`` RGB faces and their labels, deterministically from ``seed``.

    ``n_identities`` defaults to ``n // 10`` (about ten images each, at least 3 identities). The result has
    the canonical keys ``images``, ``split``, ``pose``, ``pose_valid99``, ``label``, ``class_names``, ``age``,
    ``gender``, ``identity``, ``pair_a``, ``pair_b``, ``pair_same``, ``pair_fold`` and the 0-d bool marker
    ``synthetic`` (True).
    """
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    k = n_identities if n_identities is not None else max(3, n // 10)
    if not 1 <= k <= n:
        raise ValueError(f"n_identities must be in [1, n], got {k}")
    rng = np.random.default_rng(seed)
    ids = _sample_identities(rng, k)
    id_split = _assign_splits(ids["gender"], split_fractions, rng)
    identity = rng.permutation(np.arange(n) % k)
    split = id_split[identity]
    label = _balanced_labels(split, len(EMOTIONS), rng)
    params = _sample_images(rng, ids, identity, label)
    images = np.concatenate([_render(_take(params, sl), size, rng) for sl in _chunks(n, _CHUNK)])
    pairs = _make_pairs(identity, np.flatnonzero(split == 2), rng)
    return {
        "images": images,
        "split": split.astype(np.uint8),
        "pose": np.stack([params["yaw"], params["pitch"], params["roll"]], axis=1).astype(np.float32),
        "pose_valid99": np.ones(n, dtype=bool),
        "label": label.astype(np.int64),
        "class_names": np.array(EMOTIONS),
        "age": params["age"].astype(np.float32),
        "gender": params["gender"].astype(np.uint8),
        "identity": identity.astype(np.int64),
        **pairs,
        "synthetic": np.array(True),
    }


# ---------------------------------------------------------------------------------------- labels & params


def _sample_identities(rng: np.random.Generator, k: int) -> Params:
    """Per-identity traits: gender (0 male, 1 female), base age, appearance."""
    gender = rng.integers(0, 2, k)
    male = gender == 0
    long_hair = np.where(male, rng.random(k) < 0.1, rng.random(k) < 0.85)
    tone = rng.random(k)[:, None]
    return {
        "gender": gender,
        "base_age": rng.uniform(7.0, 78.0, k),
        "skin": (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK + rng.normal(0, 0.03, (k, 3)),
        "hair": _HAIR_PALETTE[rng.integers(0, len(_HAIR_PALETTE), k)] + rng.normal(0, 0.05, (k, 3)),
        "eye_colour": _EYE_PALETTE[rng.integers(0, len(_EYE_PALETTE), k)],
        "face_w": rng.uniform(0.66, 0.80, k),
        "face_h": rng.uniform(0.64, 0.74, k),
        "eye_dx": rng.uniform(0.36, 0.46, k),
        "hair_len": np.where(long_hair, rng.uniform(0.55, 1.0, k), rng.uniform(0.0, 0.25, k)),
        "jaw": np.where(male, rng.normal(0.85, 0.05, k), rng.normal(0.62, 0.05, k)),
        "brow_thick": np.where(male, rng.normal(0.060, 0.006, k), rng.normal(0.036, 0.005, k)),
        "beard": np.where(male & (rng.random(k) < 0.35), rng.uniform(0.3, 0.7, k), 0.0),
        "lipstick": np.where(~male & (rng.random(k) < 0.4), rng.uniform(0.4, 0.9, k), 0.0),
    }


def _assign_splits(gender: np.ndarray, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Split identities train/val/test (0/1/2) by ``fractions``, separately per gender so both are in each split."""
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split_fractions must be three non-negative numbers, got {fractions}")
    frac = frac / frac.sum()
    split = np.empty(len(gender), dtype=np.int64)
    for g in (0, 1):
        members = rng.permutation(np.flatnonzero(gender == g))
        counts = np.round(np.cumsum(frac) * len(members)).astype(int)
        for s, part in enumerate(np.split(members, counts[:2])):
            split[part] = s
    return split


def _balanced_labels(split: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Emotion labels, cycled and shuffled within each split so every split of >= n_classes images has all."""
    label = np.empty(len(split), dtype=np.int64)
    for s in np.unique(split):
        idx = np.flatnonzero(split == s)
        label[idx] = rng.permutation(np.arange(len(idx)) % n_classes)
    return label


def _sample_images(rng: np.random.Generator, ids: Params, identity: np.ndarray, label: np.ndarray) -> Params:
    """Per-image parameters: identity traits, pose, age, expression and photographic nuisances."""
    n = len(identity)
    p = {key: value[identity] for key, value in ids.items()}
    p["age"] = np.clip(p.pop("base_age") + rng.normal(0, 1.5, n), 5.0, 80.0)
    p["yaw"] = rng.uniform(-60, 60, n)
    p["pitch"] = rng.uniform(-30, 30, n)
    p["roll"] = rng.uniform(-30, 30, n)
    intensity = rng.uniform(0.6, 1.2, n)[:, None]
    expr = _EXPRESSIONS[-1] + intensity * (_EXPRESSIONS[label] - _EXPRESSIONS[-1])
    expr = expr + rng.normal(0, 1, (n, len(_EXPR_KEYS))) * _EXPR_NOISE
    p.update({key: expr[:, j] for j, key in enumerate(_EXPR_KEYS)})
    p["mouth_asym"] = p["mouth_asym"] * rng.choice([-1.0, 1.0], n)
    p.update(
        scale=rng.uniform(0.88, 1.06, n),
        tx=rng.uniform(-0.08, 0.08, n),
        ty=rng.uniform(-0.06, 0.08, n),
        bg=rng.random((n, 3)),
        bg2=rng.random((n, 3)),
        bg_angle=rng.uniform(0, 2 * np.pi, n),
        bg_phase=rng.uniform(0, 2 * np.pi, (n, 2)),
        bg_freq=rng.uniform(1.0, 4.0, (n, 2)),
        clothes=rng.random((n, 3)),
        light=rng.normal(0, 0.12, (n, 2)),
        contrast=rng.uniform(0.7, 1.25, n),
        brightness=rng.uniform(-0.15, 0.15, n),
        cast=rng.normal(0, 0.06, (n, 3)),
        noise=rng.uniform(0.015, 0.05, n),
        strand_phase=rng.uniform(0, 2 * np.pi, n),
    )
    return {key: np.asarray(value, dtype=np.float32) for key, value in p.items()}


def _make_pairs(identity: np.ndarray, test_idx: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Balanced same/different verification pairs among ``test_idx``, in identity-disjoint folds where possible."""
    test_ids = rng.permutation(np.unique(identity[test_idx]))
    groups = np.array_split(test_ids, min(N_FOLDS, len(test_ids))) if len(test_ids) else []
    out: dict[str, list[np.ndarray]] = {"pair_a": [], "pair_b": [], "pair_same": [], "pair_fold": []}
    for fold, members in enumerate(groups):
        in_fold = test_idx[np.isin(identity[test_idx], members)]
        pool = in_fold if len(members) > 1 else test_idx  # a lone identity borrows impostors from the others
        same, diff = _same_pairs(in_fold, identity, rng), _diff_pairs(in_fold, pool, identity, rng)
        m = min(len(same), len(diff), PAIRS_PER_FOLD_AND_CLASS)
        for pairs, is_same in ((same[:m], True), (diff[:m], False)):
            out["pair_a"].append(pairs[:, 0])
            out["pair_b"].append(pairs[:, 1])
            out["pair_same"].append(np.full(m, is_same))
            out["pair_fold"].append(np.full(m, fold))
    dtypes = {"pair_a": np.int64, "pair_b": np.int64, "pair_same": bool, "pair_fold": np.int64}
    return {key: np.concatenate(out[key] or [np.empty(0)]).astype(dtypes[key]) for key in out}


def _same_pairs(idx: np.ndarray, identity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All pairs of distinct images of one identity among ``idx``, shuffled, shape (m, 2)."""
    a, b = np.triu_indices(len(idx), k=1)
    keep = identity[idx[a]] == identity[idx[b]]
    return rng.permutation(np.stack([idx[a[keep]], idx[b[keep]]], axis=1))


def _diff_pairs(idx: np.ndarray, pool: np.ndarray, identity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unique pairs (image of ``idx``, image of ``pool``) of different identities, shuffled, shape (m, 2)."""
    a, b = np.meshgrid(idx, pool, indexing="ij")
    a, b = a.ravel(), b.ravel()
    keep = (identity[a] != identity[b]) & ((a < b) | ~np.isin(b, idx))  # each unordered pair once
    return rng.permutation(np.stack([a[keep], b[keep]], axis=1))


def _take(params: Params, sl: slice) -> Params:
    """The parameters of images ``sl``."""
    return {key: value[sl] for key, value in params.items()}


def _chunks(n: int, step: int) -> list[slice]:
    """Consecutive slices of at most ``step`` covering ``range(n)``."""
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


# ---------------------------------------------------------------------------------------------- rendering


def _c(v: np.ndarray) -> np.ndarray:
    """Per-image scalars (m,) -> (m, 1, 1), to broadcast against (m, H, W) grids."""
    return v[:, None, None]


def _alpha(sd: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance (negative inside), in image units."""
    return np.clip(0.5 - sd / px, 0.0, 1.0)


def _ellipse_sd(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse."""
    return (np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * np.minimum(rx, ry)


def _segment_sd(x: np.ndarray, y: np.ndarray, x0, y0, x1, y1, half_width) -> np.ndarray:
    """Signed distance to a thick line segment (a capsule)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy) - half_width


def _paint(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Composite ``colour`` ((3,), (m, 3) or (m, H, W, 3)) over ``canvas`` (m, H, W, 3) with coverage ``alpha``.

    Small shapes (most facial features) are composited only where they cover, large ones densely.
    """
    flat = np.flatnonzero(alpha)
    if len(flat) > alpha.size // 4:
        canvas += alpha[..., None] * ((colour[:, None, None, :] if colour.ndim == 2 else colour) - canvas)
        return
    pixels = canvas.reshape(-1, 3)
    if colour.ndim == 2:
        colour = colour[flat // (alpha.size // len(alpha))]
    elif colour.ndim == 4:
        colour = colour.reshape(-1, 3)[flat]
    pixels[flat] += alpha.ravel()[flat, None] * (colour - pixels[flat])


def _render(p: Params, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one chunk of faces from their parameters: uint8 (m, size, size, 3)."""
    m = len(p["yaw"])
    px = 2.0 / size
    u = np.linspace(-1 + px / 2, 1 - px / 2, size, dtype=np.float32)
    gu, gv = u[None, None, :], u[None, :, None]
    canvas = _background(p, gu, gv, m, size)
    head = _head_frame(p, gu, gv)
    head["hair"] = _hair_colour(p, head)
    _draw_body(canvas, p, head, px)
    _draw_head(canvas, p, head, px)
    feat = _feature_frame(p, head)
    _draw_wrinkles(canvas, p, feat, px)
    _draw_brows(canvas, p, feat, px)
    _draw_eyes(canvas, p, feat, px)
    _draw_nose(canvas, p, feat, px)
    _draw_mouth(canvas, p, feat, px)
    return _photograph(canvas, p, gu, gv, rng)


def _background(p: Params, gu: np.ndarray, gv: np.ndarray, m: int, size: int) -> np.ndarray:
    """A two-colour gradient with low-frequency ripples, different in every image."""
    ang = _c(p["bg_angle"])
    t = 0.5 + 0.5 * (np.cos(ang) * gu + np.sin(ang) * gv) / np.sqrt(2)
    ripple = 0.08 * (
        np.sin(_c(p["bg_freq"][:, 0]) * gu * np.pi + _c(p["bg_phase"][:, 0]))
        + np.sin(_c(p["bg_freq"][:, 1]) * gv * np.pi + _c(p["bg_phase"][:, 1]))
    )
    t = np.clip(t + ripple, 0, 1)[..., None]
    bg1, bg2 = p["bg"][:, None, None, :], p["bg2"][:, None, None, :]
    canvas = np.empty((m, size, size, 3), dtype=np.float32)
    np.add(bg1 * (1 - t), bg2 * t, out=canvas)
    return canvas


def _head_frame(p: Params, gu: np.ndarray, gv: np.ndarray) -> Params:
    """Head-centred coordinates (rolled), head half-axes and age/pose helpers, all per image."""
    roll = np.deg2rad(_c(p["roll"]))
    du, dv = gu - _c(p["tx"]), gv - _c(p["ty"])
    x = np.cos(roll) * du + np.sin(roll) * dv
    y = -np.sin(roll) * du + np.cos(roll) * dv
    child = np.clip((16.0 - p["age"]) / 11.0, 0.0, 1.0)
    s = p["scale"]
    return {
        "x": x,
        "y": y,
        "a": _c(s * p["face_w"] * (1 + 0.08 * child)),
        "b": _c(s * p["face_h"] * (1 - 0.06 * child)),
        "child": _c(child),
        "sin_yaw": _c(np.sin(np.deg2rad(p["yaw"]))),
        "sin_pitch": _c(np.sin(np.deg2rad(p["pitch"]))),
    }


def _feature_frame(p: Params, h: Params) -> Params:
    """Inner-feature coordinates in face units: shifted by yaw/pitch and foreshortened (a 2-D rotation proxy)."""
    a, b = h["a"], h["b"]
    cos_yaw = np.sqrt(1 - h["sin_yaw"] ** 2)
    cos_pitch = np.sqrt(1 - h["sin_pitch"] ** 2)
    fx = (h["x"] - 0.55 * a * h["sin_yaw"]) / (a * cos_yaw)
    fy = (h["y"] - 0.45 * b * h["sin_pitch"]) / (b * cos_pitch)
    age = _c(p["age"])
    return {
        "fx": fx,
        "fy": fy,
        "px_x": 1 / (a * cos_yaw),  # one image unit in feature units, for anti-aliasing
        "px_y": 1 / (b * cos_pitch),
        "child": h["child"],
        "tan_yaw": h["sin_yaw"] / cos_yaw,
        "wrinkle": np.clip((age - 25.0) / 40.0, 0.0, 1.0),
        "skin": p["skin"],
    }


def _draw_body(canvas: np.ndarray, p: Params, h: Params, px: float) -> None:
    """Shoulders, neck and the back of long hair (everything behind the face)."""
    x, y, a, b = h["x"], h["y"], h["a"], h["b"]
    _paint(canvas, _alpha(_ellipse_sd(x, y, 0.0, 2.05 * b, 2.2 * a, 0.8 * b), px), p["clothes"])
    neck = np.maximum(np.abs(x) - 0.42 * a, np.abs(y - 1.1 * b) - 0.5 * b)
    _paint(canvas, _alpha(neck, px), 0.8 * p["skin"])
    length = _c(p["hair_len"])
    back = _ellipse_sd(x, y, 0.0, (0.3 * length - 0.05) * b, 1.22 * a, (1.12 + 0.3 * length) * b)
    back = np.maximum(back, y - b * (1.9 * length - 0.1))
    _paint(canvas, _alpha(back, px), h["hair"])


def _draw_head(canvas: np.ndarray, p: Params, h: Params, px: float) -> None:
    """Face silhouette (narrower jaw, yaw-narrowed side), beard, and the hair cap with its fringe."""
    x, y, a, b = h["x"], h["y"], h["a"], h["b"]
    side = np.where(x * h["sin_yaw"] > 0, 1 - 0.22 * np.abs(h["sin_yaw"]), 1 + 0.05 * np.abs(h["sin_yaw"]))
    lower = np.clip(y / b, 0, 1) ** 2
    half_w = a * side * (1 - (1 - _c(p["jaw"])) * lower)
    face = _ellipse_sd(x, y, 0.0, 0.0, half_w, b)
    face_alpha = _alpha(face, px)
    _paint(canvas, face_alpha, p["skin"])
    beard = face_alpha * np.clip((y / b - 0.25) * 4, 0, 1) * _c(p["beard"])
    _paint(canvas, beard, 0.6 * h["hair"])
    hairline = (-0.62 + 0.25 * (x / a) ** 2 - 0.1 * h["sin_pitch"]) * b
    cap = np.maximum(_ellipse_sd(x, y, 0.05 * a * h["sin_yaw"], -0.08 * b, 1.1 * a, 1.07 * b), y - hairline)
    _paint(canvas, _alpha(cap, px), h["hair"])


def _hair_colour(p: Params, h: Params) -> np.ndarray:
    """Per-pixel hair colour (m, H, W, 3): base colour with wavy strands, a growing fraction of them grey."""
    strands = 0.5 + 0.5 * np.sin(41.0 * h["x"] + 6.0 * np.sin(7.0 * h["y"]) + _c(p["strand_phase"]))
    grey = np.clip((_c(p["age"]) - 35.0) / 45.0, 0.0, 1.0)
    is_grey = np.clip(1.3 * grey - strands, 0, 1)[..., None]
    base = p["hair"][:, None, None, :] * (0.85 + 0.3 * strands[..., None])
    return base + is_grey * (_GREY - base)


def _draw_wrinkles(canvas: np.ndarray, p: Params, f: Params, px: float) -> None:
    """Forehead lines, crow's feet and nasolabial folds, darker with age."""
    fx, fy, w = f["fx"], f["fy"], f["wrinkle"]
    lines = [(-0.32, fy0, 0.32, fy0 + 0.02) for fy0 in (-0.44, -0.53)]
    for sgn in (-1.0, 1.0):
        lines += [
            (sgn * 0.58, -0.12, sgn * 0.70, -0.18),
            (sgn * 0.58, -0.04, sgn * 0.70, 0.0),
            (sgn * 0.17, 0.20, sgn * 0.38, 0.46),
        ]
    sd = np.min([_segment_sd(fx, fy, *line, 0.0) for line in lines], axis=0)
    thin = 0.8 * np.sqrt(f["px_x"] * f["px_y"]) * px
    _paint(canvas, _alpha(sd - thin, thin) * 0.9 * w, 0.5 * f["skin"])


def _draw_brows(canvas: np.ndarray, p: Params, f: Params, px: float) -> None:
    """Two thick brow bars: height, inner-end tilt and thickness from expression and gender."""
    fx, fy = f["fx"], f["fy"]
    y0 = -0.28 + 0.12 * f["child"] - _c(p["brow_raise"])
    tilt, eye_dx = 0.18 * _c(p["brow_tilt"]), _c(p["eye_dx"])
    sd = np.minimum(
        *(
            _segment_sd(fx, fy, sgn * (eye_dx - 0.22), y0 - tilt, sgn * (eye_dx + 0.22), y0 + 0.02, _c(p["brow_thick"]))
            for sgn in (-1.0, 1.0)
        )
    )
    _paint(canvas, _alpha(sd, px * f["px_y"]), 0.5 * p["hair"] + 0.1)


def _draw_eyes(canvas: np.ndarray, p: Params, f: Params, px: float) -> None:
    """Sclera, iris and pupil; children's eyes are larger and lower, expressions widen or narrow them."""
    fx, fy = f["fx"], f["fy"]
    scale = 1 + 0.35 * f["child"]
    rx, ry = 0.15 * scale, 0.09 * scale * _c(np.clip(p["eye_open"], 0.25, 2.0))
    cy = -0.1 + 0.12 * f["child"]
    eye_dx = _c(p["eye_dx"])
    aa = px * f["px_y"]
    ex = np.abs(fx)  # both eyes at once: they are mirror images
    sclera = _alpha(_ellipse_sd(ex, fy, eye_dx, cy, rx, ry), aa)
    _paint(canvas, sclera, _SCLERA)
    _paint(canvas, sclera * _alpha(_ellipse_sd(ex, fy, eye_dx, cy, 0.08 * scale, 0.08 * scale), aa), p["eye_colour"])
    _paint(canvas, sclera * _alpha(_ellipse_sd(ex, fy, eye_dx, cy, 0.035, 0.035), aa), np.zeros(3, np.float32))


def _draw_nose(canvas: np.ndarray, p: Params, f: Params, px: float) -> None:
    """A nose ridge and base; the tip protrudes, so yaw shifts it further than the eyes."""
    fx, fy = f["fx"], f["fy"]
    size = 1 - 0.25 * f["child"]
    tip = 0.25 * f["tan_yaw"]
    ridge = _segment_sd(fx, fy, 0.3 * tip, -0.02, tip, 0.26 * size, 0.025)
    base = _segment_sd(fx, fy, tip - 0.12 * size, 0.28 * size, tip + 0.12 * size, 0.28 * size, 0.03)
    _paint(canvas, _alpha(np.minimum(ridge, base), px * f["px_y"]) * 0.8, 0.68 * f["skin"])


def _draw_mouth(canvas: np.ndarray, p: Params, f: Params, px: float) -> None:
    """Lips along a parabola (curvature, width, asymmetry) with a lens-shaped opening."""
    fx, fy = f["fx"], f["fy"]
    my = 0.5 - 0.05 * f["child"]
    width = 0.42 * _c(p["mouth_width"])
    t = np.clip(fx / width, -1.0, 1.0)
    centre = my - _c(p["mouth_curve"]) * (t**2 - 0.4) + _c(p["mouth_asym"]) * t
    lens = _c(np.maximum(p["mouth_open"], 0.0)) * (1 - t**2)
    dist, across = np.abs(fy - centre), np.abs(fx) - width
    aa = px * f["px_y"]
    lips = (_LIPS + p["lipstick"][:, None] * (_LIPSTICK - _LIPS)) * (0.5 + 0.5 * p["skin"])
    _paint(canvas, _alpha(np.maximum(dist - lens - 0.055, across), aa), lips)
    _paint(canvas, _alpha(np.maximum(dist - lens + 0.01, across), aa), _MOUTH_INSIDE)


def _photograph(canvas: np.ndarray, p: Params, gu: np.ndarray, gv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Directional light, contrast/brightness/colour cast, sensor noise; quantise to uint8."""
    light = 1 + _c(p["light"][:, 0]) * gu + _c(p["light"][:, 1]) * gv
    canvas *= light[..., None]
    canvas -= 0.5
    canvas *= p["contrast"][:, None, None, None]
    canvas += (0.5 + p["brightness"][:, None] + p["cast"])[:, None, None, :]
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * p["noise"][:, None, None, None]
    return (np.clip(canvas, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
