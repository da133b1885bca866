"""The codec's float64 prior step graph (runtime/codec.py): models.prior.PriorStep on a float64 copy of the
transformer, as ONNX, checked against PyTorch (float64) on fresh random inputs before it is returned.

Why float64: the codec's integer tables (runtime/codec_probs.py) must come out the same on the encoder's and
the decoder's backend. In float32, torch and onnxruntime logits differ by ~1e-6, so a rounding edge is crossed
somewhere in most images; in float64 by ~1e-12, which the tables' 1e-8 margin absorbs.
"""
from __future__ import annotations

import numpy as np

from .graph import DEFAULT_OPSET, Part, checked_graph, metadata
from .vq import IN_MEMORY_BATCHES, step_inputs


def exact_step_graph(step, opset: int = DEFAULT_OPSET) -> bytes:
    """`step`: a PriorStep over a float64 transformer -> its graph (token, position, cache float64) -> (logits, kv)."""
    def make(n, seed):
        feeds = step_inputs(step, n, np.random.default_rng(seed))
        feeds["cache"] = feeds["cache"].astype(np.float64)
        return feeds

    meta = metadata("prior", "codec_prior", (0, 0, 0), (0.0, 1.0), "")
    part = Part("prior", step, make, ["logits", "kv"], {"logits": 20.0, "kv": 8.0}, meta, fixed=("position",),
                atol=1e-9, rtol=1e-9)
    return checked_graph(part, "the codec's float64 prior step graph", opset, exporter="torchscript",
                         batches=IN_MEMORY_BATCHES)
