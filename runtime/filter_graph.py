"""A VAE checkpoint's whole filter step as one ONNX graph, exported in memory.

Contract (the same one `latentforge export` writes for `part=filter`): inputs `frame` uint8
[N, H, W, C] at the model's size, `offset` float32 [N, D], `temperature` float32 [1], `eps`
float32 [N, D]; output `frame_out` uint8 [N, H, W, C]. Inside: to the value range, encode,
z = mu + temperature * sigma * eps + offset, decode, back to uint8. One graph means one
runtime call per frame and no float image ever crosses into Python.

This is the runtime's minimal exporter so a checkpoint gets the fast path with no file on
disk; the exporter's own (issue 6) is the official one and writes the same contract.
"""
from __future__ import annotations

import warnings

import numpy as np

from latentforge.checkpoint import PREFIX as META

INPUTS = ("frame", "offset", "temperature", "eps")
OUTPUT = "frame_out"


def filter_module(model, value_range: tuple[float, float]):
    """The torch reference of the filter graph: `model` wrapped with uint8 NHWC at both ends."""
    import torch

    lo, hi = value_range

    class FilterStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, frame, offset, temperature, eps):
            x = frame.permute(0, 3, 1, 2).to(torch.float32) * ((hi - lo) / 255.0) + lo
            mu, logvar = self.model.encode(x)
            z = mu + temperature * torch.exp(0.5 * logvar) * eps + offset
            y = (self.model.decode(z) - lo) * (255.0 / (hi - lo))
            # round half to even, as np.rint in images.to_uint8, so both paths give the same bytes
            return torch.round(y.clamp(0.0, 255.0)).to(torch.uint8).permute(0, 2, 3, 1)

    return FilterStep().eval()


def filter_graph_bytes(model, info, meta: dict[str, str]) -> bytes:
    """Export `filter_module(model)` with a dynamic batch, check it against the torch reference on a random
    frame (to 1 uint8 step: float rounding can flip a .5), and return the ModelProto's bytes."""
    import io

    import onnx
    import onnxruntime as ort
    import torch

    from latentforge.errors import ExportError, ParityError

    cfg = info.config
    size, channels, dim = int(cfg["image_size"]), int(cfg["channels"]), int(cfg["latent_dim"])
    module = filter_module(model, info.value_range)
    example = (torch.zeros(2, size, size, channels, dtype=torch.uint8), torch.zeros(2, dim),
               torch.zeros(1), torch.zeros(2, dim))
    batch = {0: "batch"}
    buffer = io.BytesIO()
    # The TorchScript exporter: 0.6 s for the faces VAE where the dynamo one takes 6-13 s, and this graph
    # is made while a user waits for the first frame. Its deprecation warning is not the user's concern.
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, buffer, dynamo=False, input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_axes={"frame": batch, "offset": batch, "eps": batch, OUTPUT: batch},
                              opset_version=18)
        except Exception as e:
            raise ExportError(f"could not export the filter graph of {str(info.path)!r}: "
                              f"{str(e).splitlines()[0]}; use Filter(model, use_graph=False)") from e
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name = "latentforge"
    for key, value in sorted({**meta, META + "part": "filter"}.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    rng = np.random.default_rng()  # fresh entropy every export
    frame = rng.integers(0, 256, (2, size, size, channels), dtype=np.uint8)
    offset, eps = rng.standard_normal((2, 2, dim), dtype=np.float32)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {"frame": frame, "offset": offset, "temperature": np.ones(1, np.float32),
                                 "eps": eps})[0]
    ref = reference_filter(model, info.value_range, frame, offset, 1.0, eps)
    worst = int(np.abs(got.astype(np.int16) - ref).max())
    if worst > 1:
        raise ParityError(f"the filter graph exported from {str(info.path)!r} differs from PyTorch by up to {worst} "
                          "uint8 steps; use Filter(model, use_graph=False)")
    return data


def reference_filter(model, value_range, frame: np.ndarray, offset: np.ndarray, temperature: float,
                     eps: np.ndarray) -> np.ndarray:
    """The plain-PyTorch twin of the graph, for parity checks."""
    import torch

    module = filter_module(model, value_range)
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(frame)), torch.from_numpy(offset),
                     torch.tensor([temperature], dtype=torch.float32), torch.from_numpy(eps))
    return out.numpy()
