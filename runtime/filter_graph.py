"""A VAE checkpoint's whole filter step as one ONNX graph, exported in memory.

Contract (the one `latentforge export --part filter` writes, from the same Part: export/parts.py,
`filter_part`): inputs `frame` uint8 [N, H, W, C] at the model's size, `offset` float32 [N, D],
`temperature` float32 [1], `eps` float32 [N, D]; outputs `frame_out` uint8 [N, H, W, C] and `finite` uint8 [N]
(1 where the decoded image held no NaN/Inf, for the NaN guard). Inside: to the value range, encode,
z = mu + temperature * sigma * eps + offset, decode, back to uint8 (NaN -> 0).
One graph means one runtime call per frame and no float image ever crosses into Python; the graph is
checked against the Part's PyTorch module before it is returned.
"""
from __future__ import annotations


def filter_graph_bytes(model, info) -> bytes:
    """`model`'s filter graph from its checkpoint `info`. A user waits for it, so it is made by the TorchScript
    exporter and checked on one batch of 2 (0.2 s for the faces VAE; 0.5 s at the exporter's batches 1 and 16)."""
    from latentforge.export.graph import checked_graph
    from latentforge.export.parts import build_part
    from latentforge.export.source import source_of

    return checked_graph(build_part(source_of(model, info), "filter"),
                         f"the filter graph exported from {str(info.path)!r}", exporter="torchscript",
                         remedy="use Filter(model, use_graph=False)", batches=(2,))
