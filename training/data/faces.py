"""The faces data set: procedural cartoon faces drawn from known factors, so latents can be checked against the truth.

Every shape is a signed distance (in units of the image side) turned into coverage with
about one pixel of anti-aliasing, and the whole batch is drawn at once with NumPy
broadcasting: distances are [n, rows, cols], per-image parameters [n, 1, 1]. The face is
symmetric, so both eyes (and both glasses rims) are one shape evaluated at |x - midline|.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from latentforge.errors import InputError

from .image_data import ImageData
from .splits import SPLITS, uniforms

FACTORS: tuple[str, ...] = (
    "eyes_open", "smile", "face_width", "skin_tone", "hair_hue", "background_hue", "shift_x", "shift_y", "glasses",
)
_LOW = np.array([0, -1, 0, 0, 0, 0, -1, -1, 0], dtype=np.float32)
_HIGH = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=np.float32)
_GLASSES = FACTORS.index("glasses")

# Geometry, as fractions of the image side, relative to the head's centre (y grows downwards).
# The eyes are big on purpose: a small VAE must learn them.
_SHIFT = 0.08                       # the largest translation of the whole face
_HEAD_Y = 0.53
_HEAD_HALF_HEIGHT = 0.35
_HEAD_HALF_WIDTH = (0.27, 0.35)     # face_width 0 .. 1
_HAIR_MARGIN = 0.035                # how far the hair cap stands out around the head
_HAIR_LIFT = 0.02
_HAIR_BOTTOM = -0.08                # the cap ends at this height at the sides of the head
_HAIRLINE = (-0.22, 0.10)           # the fringe's lower edge: y = a + b * (x / head half width)^2
_EYE_Y = -0.04
_EYE_DX = (0.13, 0.15)              # eye centre distance from the midline, face_width 0 .. 1
_EYE_RX = 0.085                     # each eye is 17% of the image wide
_EYE_RY_OPEN = 0.08
_PUPIL_R = 0.038
_LID_HALF_WIDTH = 0.008             # the dark eye outline, which is all that is left of a closed eye
_RIM_R = 0.105
_RIM_HALF_WIDTH = 0.01
_NOSE = (0.085, 0.022, 0.018)       # y, half width, half height; drawn in a darker shade of the skin
_NOSE_SHADE = 0.82
_MOUTH_Y = 0.19
_MOUTH_HALF_WIDTH = (0.10, 0.13)
_MOUTH_BEND = 0.075                 # how far the mouth's middle sags below its corners at smile = 1
_MOUTH_THICKNESS = 0.022

_SKIN = np.array([[240, 200, 170], [205, 150, 110], [100, 62, 42]], dtype=np.float32)  # skin_tone 0, 0.5, 1
_SCLERA = np.array([250, 250, 250], dtype=np.float32)
_PUPIL = np.array([25, 20, 35], dtype=np.float32)
_LID = np.array([30, 22, 26], dtype=np.float32)
_MOUTH = np.array([115, 25, 40], dtype=np.float32)
_RIMS = np.array([20, 20, 25], dtype=np.float32)

# measure_eyes_open counts sclera: pixels whose darkest channel is above every skin colour's (170).
_WHITE_FROM, _WHITE_TO = 195.0, 240.0

FACES_TEST_SIZE = 2000


def sample_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """n independent uniform draws of every factor; glasses is 0 or 1 with probability 0.5 each."""
    return factors_from_uniform(rng.random((n, len(FACTORS)), dtype=np.float32))


def factors_from_uniform(u: np.ndarray) -> np.ndarray:
    """Map uniforms in [0, 1) of shape [n, len(FACTORS)] to factors; the one place that knows the ranges."""
    u = np.asarray(u, dtype=np.float32)
    f = _LOW + (_HIGH - _LOW) * u
    f[:, _GLASSES] = (u[:, _GLASSES] < 0.5).astype(np.float32)
    return f


def _lerp(bounds: tuple[float, float], t: np.ndarray) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * t


def _geometry(factors: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image shape parameters, each [n, 1, 1]; shared by the renderer and measure_eyes_open."""
    f = {name: np.asarray(factors[:, i], dtype=np.float32)[:, None, None] for i, name in enumerate(FACTORS)}
    return {
        "cx": 0.5 + _SHIFT * f["shift_x"],
        "cy": _HEAD_Y + _SHIFT * f["shift_y"],
        "head_a": _lerp(_HEAD_HALF_WIDTH, f["face_width"]),
        "eye_dx": _lerp(_EYE_DX, f["face_width"]),
        "eye_ry": _EYE_RY_OPEN * np.clip(f["eyes_open"], 0, 1),
        "mouth_w": _lerp(_MOUTH_HALF_WIDTH, f["face_width"]),
        "bend": _MOUTH_BEND * f["smile"],
        "glasses": f["glasses"] > 0.5,
    }


def _hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """Hue [n] in [0, 1] at fixed saturation and value -> RGB [n, 3] in 0..255."""
    k = (np.array([5, 3, 1], dtype=np.float32) + 6 * h[:, None]) % 6
    return 255 * v * (1 - s * np.clip(np.minimum(k, 4 - k), 0, 1))


def _skin(tone: np.ndarray) -> np.ndarray:
    t = np.clip(tone, 0, 1)[:, None] * 2
    return _SKIN[0] + np.minimum(t, 1) * (_SKIN[1] - _SKIN[0]) + np.maximum(t - 1, 0) * (_SKIN[2] - _SKIN[1])


def _ellipse(x: np.ndarray, y: np.ndarray, rx, ry) -> np.ndarray:
    """Signed distance to an axis-aligned ellipse, to first order (exact on the axes, good near the edge)."""
    x2, y2 = x * x, y * y          # [n, 1, W] and [n, H, 1]: cheap until they meet, so fold constants in first
    k0_squared = x2 / rx**2 + y2 / ry**2
    k0 = np.sqrt(k0_squared)
    k1 = np.sqrt((x2 / rx**4 + 1e-12) + y2 / ry**4)
    return (k0_squared - k0) / k1


def _flat_ellipse(x: np.ndarray, y: np.ndarray, rx, ry) -> np.ndarray:
    """_ellipse for one that may be nearly a line (a closing eye).

    There the first-order estimate undershoots far off the ends and would smear the eye
    sideways, so it is bounded below by the distance to the bounding box, never more
    than the true distance.
    """
    ry = np.maximum(ry, 1e-3)
    qx, qy = np.abs(x) - rx, np.abs(y) - ry
    box = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    return np.maximum(_ellipse(x, y, rx, ry), box)


def _mouth(x: np.ndarray, y: np.ndarray, w, bend) -> np.ndarray:
    """Distance to a thick parabola y = bend * (1/2 - (x/w)^2) for |x| <= w, with round ends (y grows down)."""
    curve = bend * (0.5 - (x / w) ** 2)
    slope = 2 * bend * x / w**2
    along = np.abs(y - curve) / np.sqrt(1 + slope**2)
    beyond = np.hypot(np.abs(x) - w, y + 0.5 * bend)
    return np.where(np.abs(x) <= w, along, beyond) - _MOUTH_THICKNESS


class _Canvas:
    """Planar float RGB [3, n, size, size], blended one window at a time.

    Planar, because blending one [n, H, W] plane at a time is ~6x faster than broadcasting
    alpha over a trailing channel axis; windowed (the box that holds a feature in every
    face of the batch), because the eyes, mouth and glasses cover a small part of the image.
    """

    def __init__(self, background: np.ndarray, g: dict[str, np.ndarray], size: int):
        self.size = size
        self.rgb = np.empty((3, len(background), size, size), dtype=np.float32)
        self.rgb[...] = background.T[:, :, None, None]
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.hx = grid[None, None, :] - g["cx"]           # [n, 1, size], relative to the head's centre
        self.hy = grid[None, :, None] - g["cy"]           # [n, size, 1]
        self.cx = (float(g["cx"].min()), float(g["cx"].max()))
        self.cy = (float(g["cy"].min()), float(g["cy"].max()))

    def _pixels(self, lo: float, hi: float) -> slice:
        pad = 1.0 / self.size                              # room for the anti-aliased edge
        return slice(max(int((lo - pad) * self.size), 0), min(int(np.ceil((hi + pad) * self.size)), self.size))

    def window(self, half_width: float, top: float, bottom: float):
        """Head-relative coordinates (hx, hy) of the pixels within |hx| <= half_width, top <= hy <= bottom."""
        cols = self._pixels(self.cx[0] - half_width, self.cx[1] + half_width)
        rows = self._pixels(self.cy[0] + top, self.cy[1] + bottom)
        return self.hx[:, :, cols], self.hy[:, rows, :], (rows, cols)

    def blend(self, where: tuple[slice, slice], sdf: np.ndarray, rgb: np.ndarray) -> None:
        """Paint `rgb` ([3] or [n, 3]) where sdf < 0, with a one-pixel ramp across the edge."""
        alpha = np.clip(0.5 - sdf * self.size, 0, 1)
        rgb = np.broadcast_to(rgb, (alpha.shape[0], 3))
        for c in range(3):
            plane = self.rgb[c, :, where[0], where[1]]
            plane += alpha * (rgb[:, c, None, None] - plane)

    def to_uint8(self) -> np.ndarray:
        self.rgb += 0.5                                    # blends stay within 0..255, so truncation rounds
        return np.ascontiguousarray(self.rgb.astype(np.uint8).transpose(1, 2, 3, 0))


def render_faces(factors: np.ndarray, size: int = 64) -> np.ndarray:
    """Factors [n, len(FACTORS)] -> uint8 RGB faces [n, size, size, 3]; deterministic, any square size."""
    factors = np.asarray(factors, dtype=np.float32)
    if factors.ndim != 2 or factors.shape[1] != len(FACTORS):
        raise InputError(f"factors must be [n, {len(FACTORS)}], one column per FACTORS entry, "
                         f"got {list(factors.shape)}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise InputError(f"size must be an integer of at least 8 pixels, got {size!r}")
    if len(factors) == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    g = _geometry(factors)
    canvas = _Canvas(_hsv_to_rgb(factors[:, FACTORS.index("background_hue")], 0.35, 0.9), g, size)
    hair = _hsv_to_rgb(factors[:, FACTORS.index("hair_hue")], 0.7, 0.55)
    skin = _skin(factors[:, FACTORS.index("skin_tone")])
    a, b, reach = g["head_a"], _HEAD_HALF_HEIGHT, _HEAD_HALF_WIDTH[1] + _HAIR_MARGIN

    # Hair is one cap behind the head; the skin stops at the hairline, so no seam shows between them.
    hx, hy, where = canvas.window(reach, -b - reach, _HAIR_BOTTOM)
    cap = _ellipse(hx, hy + _HAIR_LIFT, a + _HAIR_MARGIN, b + _HAIR_MARGIN)
    canvas.blend(where, np.maximum(cap, hy - _HAIR_BOTTOM), hair)
    hx, hy, where = canvas.window(reach, -b, b)
    hairline = _HAIRLINE[0] + _HAIRLINE[1] * (hx / a) ** 2
    below_hairline = (hairline - hy) / np.sqrt(1 + (2 * _HAIRLINE[1] * hx / a**2) ** 2)
    canvas.blend(where, np.maximum(_ellipse(hx, hy, a, b), below_hairline), skin)

    nose_y, nose_rx, nose_ry = _NOSE
    hx, hy, where = canvas.window(nose_rx, nose_y - nose_ry, nose_y + nose_ry)
    canvas.blend(where, _ellipse(hx, hy - nose_y, nose_rx, nose_ry), skin * _NOSE_SHADE)

    rim_reach = _RIM_R + _RIM_HALF_WIDTH                       # the glasses hold everything else drawn here
    hx, hy, where = canvas.window(_EYE_DX[1] + rim_reach, _EYE_Y - rim_reach, _EYE_Y + rim_reach)
    ex, ey = np.abs(hx) - g["eye_dx"], hy - _EYE_Y
    sclera = _flat_ellipse(ex, ey, _EYE_RX, g["eye_ry"])
    from_centre = np.hypot(ex, ey)
    canvas.blend(where, sclera, _SCLERA)
    canvas.blend(where, np.maximum(from_centre - _PUPIL_R, sclera), _PUPIL)
    canvas.blend(where, np.abs(sclera) - _LID_HALF_WIDTH, _LID)
    rims = np.abs(from_centre - _RIM_R) - _RIM_HALF_WIDTH
    bridge = np.maximum(np.abs(ey) - _RIM_HALF_WIDTH, np.abs(hx) - (g["eye_dx"] - _RIM_R))
    canvas.blend(where, np.where(g["glasses"], np.minimum(rims, bridge), np.inf), _RIMS)

    mouth_reach = _MOUTH_BEND / 2 + _MOUTH_THICKNESS
    hx, hy, where = canvas.window(_MOUTH_HALF_WIDTH[1] + _MOUTH_THICKNESS,
                                  _MOUTH_Y - mouth_reach, _MOUTH_Y + mouth_reach)
    canvas.blend(where, _mouth(hx, hy - _MOUTH_Y, g["mouth_w"], g["bend"]), _MOUTH)
    return canvas.to_uint8()


def measure_eyes_open(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Eye openness read back from pixels: 0 for closed eyes, about 1 for wide open ones, monotone in eyes_open.

    Uses the known geometry: the factors (shift, face_width) say where the eyes are, and
    inside those two boxes it counts sclera-white pixels (a soft threshold on the darkest
    channel, above every skin tone), divided by the same count on a centred face with
    wide-open eyes rendered at the same size. So it is ground truth for rendered faces and
    for a model's output at the same factors, not a detector for arbitrary images.
    """
    images, factors = np.asarray(images), np.asarray(factors, dtype=np.float32)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or len(images) != len(factors):
        raise InputError(f"measure_eyes_open needs square RGB images [n, H, H, 3] and factors [n, {len(FACTORS)}], "
                         f"got {list(images.shape)} and {list(factors.shape)}")
    return _white_in_eyes(images, factors) / _white_in_eyes_wide_open(images.shape[1])


def _white_in_eyes(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    size = images.shape[1]
    g = _geometry(factors)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    ex = np.abs(grid[None, None, :] - g["cx"]) - g["eye_dx"]
    ey = grid[None, :, None] - g["cy"] - _EYE_Y
    in_eyes = (np.abs(ex) <= _EYE_RX) & (np.abs(ey) <= _EYE_RY_OPEN)
    white = np.clip((images.min(axis=3).astype(np.float32) - _WHITE_FROM) / (_WHITE_TO - _WHITE_FROM), 0, 1)
    return (white * in_eyes).sum(axis=(1, 2))


@lru_cache(maxsize=None)
def _white_in_eyes_wide_open(size: int) -> float:
    reference = np.zeros((1, len(FACTORS)), dtype=np.float32)
    reference[0, FACTORS.index("eyes_open")] = 1.0
    return float(_white_in_eyes(render_faces(reference, size), reference)[0])


class FacesData(ImageData):
    """Cartoon faces, rendered on demand: image i of a split is a pure function of (seed, split, i).

    The train split is effectively unlimited (2**31 - 1 images, never repeated in practice);
    the test split is 2000 images from a different stream, so it is held out.
    """

    def __init__(self, image_size: int, seed: int):
        super().__init__("faces", image_size, 3, list(FACTORS))
        self.seed = seed

    def _size(self, split: str) -> int:
        return 2**31 - 1 if split == "train" else FACES_TEST_SIZE

    def _get(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        factors = factors_from_uniform(uniforms(self.seed, SPLITS.index(split), indices, len(FACTORS)))
        return render_faces(factors, self.image_size), factors
