"""Draws docs/filter_eyes.png: held-out faces with nearly closed eyes through latentforge.Filter, the
"eyes_open" slider moved between frames without reloading. Also prints the eye openness read back from
the output pixels (the faces data set's own ground-truth measure).

    python docs/make_filter_eyes.py [--attributes-out faces_attributes.safetensors]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from latentforge import Filter, load
from latentforge.checkpoint import load_checkpoint
from latentforge.demo import SHIPPED
from latentforge.images import save_grid
from latentforge.training.data import faces
from latentforge.training.attributes import attribute_directions
from latentforge.training.data import open_data

AMOUNTS = (0.0, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/filter_eyes.png")
    parser.add_argument("--attributes-out", help="also keep the directions as an attributes .safetensors file")
    args = parser.parse_args()
    module, info = load_checkpoint(SHIPPED)
    data = open_data("faces", image_size=info.config["image_size"])
    directions = attribute_directions(module, info.value_range, data, names=["eyes_open"])
    with tempfile.TemporaryDirectory() as tmp:
        attrs_path = Path(args.attributes_out or Path(tmp) / "faces_attributes.safetensors")
        save_file(directions, attrs_path)
        f = Filter(load(SHIPPED), attributes=attrs_path)
    images, attrs = data.get("test", np.arange(400))
    pick = np.argsort(attrs[:, data.attribute_names.index("eyes_open")])[:6]
    frames = images[pick]
    rows = [frames]
    for amount in AMOUNTS:
        f.set_edits({"eyes_open": amount})  # a slider moving between frames
        out = np.stack([f(frame) for frame in frames])
        rows.append(out)
        print(f"eyes_open {amount:+.1f}: eye openness read from the pixels "
              f"{float(faces.measure_eyes_open(out, attrs[pick]).mean()):.2f}")
    print(f"input frames: eye openness {float(faces.measure_eyes_open(frames, attrs[pick]).mean()):.2f}")
    save_grid(np.concatenate(rows), args.out, nrow=len(frames), scale=3)
    print(f"wrote {args.out}: rows = input, then eyes_open " + ", ".join(f"{a:+.1f}" for a in AMOUNTS))


if __name__ == "__main__":
    main()
