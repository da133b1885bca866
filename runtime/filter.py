"""The real-time filter: uint8 frames of any size in, edited frames out.

    f = latentforge.Filter(model, edits={"eyes_open": 1.5}, temperature=0.0)
    out = f(frame)                      # one frame, HxWx3 uint8
    for out in f.stream(frames): ...    # capture, inference and output overlap on three threads

Each frame is center-cropped to the model's aspect, resized to the model (Pillow: its C resampler
antialiases a downscale, which a NumPy stride or nearest pick would alias, and it releases the GIL
so the capture thread overlaps inference), run through the filter graph (encode, z = mu +
temperature * sigma * eps + offset, decode, in one runtime call; runtime/filter_graph.py) or,
for a model without one, through Model.encode/decode (the plain reference path), resized back
and pasted into the crop it came from. Edits are an offset sum(amount * direction), so changing
them between frames costs nothing.
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np

from latentforge.directions import edit_offset, load_directions
from latentforge.errors import InputError

from .pipeline import FilterStats, run_pipeline

MAX_SKIP = 10  # consecutive similar frames reused at most, as StreamDiffusion's max_skip_frame


class Filter:
    """One stream of frames through one model. Not for concurrent calls: make one Filter per stream."""

    def __init__(self, model, edits: dict[str, float] | None = None, temperature: float = 0.0,
                 attributes=None, skip_similar: float | None = None, seed: int | None = 0,
                 use_graph: bool = True) -> None:
        self.model = model
        h, w, c = model.image_shape
        self.size = (h, w)
        self.channels = c
        self.directions = model.attributes if attributes is None else load_directions(attributes, model.latent_dim)
        self._graph = model.filter_graph() if use_graph else None
        if self._graph is None and not model.has_encoder:
            raise InputError(f"{str(model.path)!r} has no encoder and no filter graph, so frames cannot be encoded; "
                             "load a checkpoint that encodes (a VAE, or a gan-encoder for a GAN) or the exporter's "
                             "filter graph (.onnx with part=filter)")
        self.path = "filter graph" if self._graph is not None else "encode-decode"
        # a checkpoint on torch runs its filter graph on onnxruntime: say where the frames really go
        self.backend = self._graph.name if self._graph is not None else model.backend
        if skip_similar is not None and not 0.0 < skip_similar < 1.0:
            raise InputError(f"skip_similar must be a cosine-similarity threshold in (0, 1), e.g. 0.98, "
                             f"got {skip_similar!r}")
        self.skip_similar = skip_similar
        self._rng = np.random.default_rng(seed)  # PCG64, as latentforge.latents: one seed, same noise anywhere
        self._offset = np.zeros((1, model.latent_dim), np.float32)
        self._temperature = np.zeros(1, np.float32)
        self._zeros = np.zeros((1, model.latent_dim), np.float32)
        self._boxes: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (similarity vector, model-size output) of the last run
        self._skips = 0
        self.stats = FilterStats()
        self.set_edits(edits or {})
        self.set_temperature(temperature)

    def set_edits(self, edits: dict[str, float]) -> None:
        """Replace the edits, e.g. {"eyes_open": 1.5}; takes effect from the next frame."""
        offset = edit_offset(self.directions, edits, self.model.latent_dim)
        self._offset = offset[None]  # swapped whole, so a frame in flight sees the old or the new, never half
        self.edits = dict(edits)

    def set_temperature(self, temperature: float) -> None:
        """Noise around the encoded mean: 0 is deterministic, 1 samples the posterior."""
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature >= 0 \
                or not math.isfinite(temperature):
            raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
        self._temperature = np.array([temperature], np.float32)

    def step_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(offset [1, D], temperature * eps [1, D]) for the next frame: what `infer` feeds the filter graph, with
        the temperature folded into the noise, for a caller that runs many streams' frames in one graph call
        with temperature 1 (the server's shared batcher). Draws from this filter's noise generator."""
        temperature, offset = self._temperature, self._offset
        if temperature[0] == 0:
            return offset, self._zeros
        return offset, temperature[0] * self._rng.standard_normal(offset.shape, np.float32)

    def __call__(self, frame) -> np.ndarray:
        """One frame HxWxC uint8 -> the edited frame, same size."""
        pre = self.preprocess(frame)
        return self.postprocess(pre, self.infer(pre[0]))

    def stream(self, frames, drop: bool = False, queue_size: int = 2):
        """Yield an output per processed frame, capture/inference/output overlapping.

        drop=False processes every frame (a file); drop=True lets the newest frame win when the source is
        faster than the model (a camera): frames replaced before inference took them are counted in
        stats.dropped, and the last frame is always processed. Queues hold at most `queue_size` frames.
        """
        return run_pipeline(frames, self.preprocess, self.infer, self.postprocess, self.stats, drop, queue_size)

    def preprocess(self, frame) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """(model-size frame [h, w, c], the original frame, its crop box (top, left, height, width))."""
        start = time.perf_counter()
        if self.stats.frames_in == 0:
            self.stats.started = start  # frames/s counts from the first frame, not from construction
        self.stats.frames_in += 1
        arr = np.asarray(frame)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise InputError(f"frames must be uint8 [H, W, 3], got {arr.dtype} {list(arr.shape)}")
        box = self._box(arr.shape[:2])
        top, left, bh, bw = box
        crop = arr[top:top + bh, left:left + bw]
        h, w = self.size
        if (bh, bw) != (h, w) or self.channels != 3:
            from PIL import Image

            image = Image.fromarray(np.ascontiguousarray(crop))
            if self.channels == 1:
                image = image.convert("L")
            # reducing_gap: a box reduce first for large factors, then the antialiased bilinear pass; Pillow
            # documents it as indistinguishable from the full pass at >= 2, and it took 480x480 -> 64x64 from
            # 1.0 to 0.6 ms here
            crop = np.asarray(image.resize((w, h), Image.BILINEAR, reducing_gap=2.0)).reshape(h, w, self.channels)
        small = np.ascontiguousarray(crop)
        self.stats.add("pre", time.perf_counter() - start)
        return small, arr, box

    def infer(self, small: np.ndarray) -> np.ndarray:
        """Model-size frame -> model-size edited frame; reuses the last output for a near-identical frame."""
        start = time.perf_counter()
        vector = None
        if self.skip_similar is not None:
            vector = small.astype(np.float32).ravel() / 127.5 - 1.0
            if self._similar(vector):
                self.stats.skipped += 1
                self.stats.add("infer", time.perf_counter() - start)
                return self._last[1]
        temperature, offset = self._temperature, self._offset
        eps = self._zeros if temperature[0] == 0 else self._rng.standard_normal(offset.shape, np.float32)
        if self._graph is not None:
            out = self.model.run_filter({"frame": small[None], "offset": offset, "temperature": temperature,
                                         "eps": eps})[0]   # the graph's frame_out, under the NaN guard
        else:
            mu, logvar = self.model.encode(small[None])
            out = self.model.decode(mu + temperature[0] * np.exp(0.5 * logvar) * eps + offset)[0]
        if vector is not None:
            self._last = (vector, out)
        self.stats.add("infer", time.perf_counter() - start)
        return out

    def _similar(self, vector: np.ndarray) -> bool:
        """StreamDiffusion's stochastic similarity filter: skip with probability rising from 0 at the threshold
        to 1 at identical frames, never more than MAX_SKIP in a row; similarity is to the last processed frame."""
        if self._last is None:
            return False
        last = self._last[0]
        cos = float(vector @ last) / (float(np.linalg.norm(vector) * np.linalg.norm(last)) or 1.0)
        skip_prob = max(0.0, 1.0 - (1.0 - cos) / (1.0 - self.skip_similar))
        if self._skips >= MAX_SKIP or self._rng.random() >= skip_prob:
            self._skips = 0
            return False
        self._skips += 1
        return True

    def postprocess(self, pre, out: np.ndarray) -> np.ndarray:
        """Resize the model-size output back to the crop and paste it into (a copy of) the original frame."""
        start = time.perf_counter()
        small, frame, (top, left, bh, bw) = pre
        if out.shape[2] == 1:
            out = np.repeat(out, 3, axis=2)
        if (bh, bw) != out.shape[:2]:
            from PIL import Image

            out = np.asarray(Image.fromarray(out).resize((bw, bh), Image.BILINEAR))
        if (bh, bw) == frame.shape[:2]:
            result = np.array(out, copy=True)  # never hand out a buffer the next frame reuses
        else:
            result = frame.copy()
            result[top:top + bh, left:left + bw] = out
        self.stats.add("post", time.perf_counter() - start)
        self.stats.frames_out += 1
        return result

    def _box(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """The largest centered crop with the model's aspect ratio, cached per frame size."""
        box = self._boxes.get(shape)
        if box is None:
            fh, fw = shape
            h, w = self.size
            if fw * h > fh * w:
                bh, bw = fh, max(1, round(fh * w / h))
            else:
                bh, bw = max(1, round(fw * h / w)), fw
            box = self._boxes[shape] = ((fh - bh) // 2, (fw - bw) // 2, bh, bw)
        return box

    def summary(self) -> str:
        return self.stats.summary()
