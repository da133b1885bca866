"""The fuzz targets: for each input latentforge reads, valid seed files, a mutation strategy, how a case is
written, and what loading it means (run inside tests/fuzz_worker.py, a subprocess, so a native crash is seen).

Every case must end with the file loaded (and used once: a sample drawn, a frame decoded), or a
latentforge.errors exception with a one-line message. Cases a target lists in `must_refuse` (ONNX external
data outside the model's folder) must end refused: loading them would read a file the model does not own.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hypothesis import strategies as st

from fuzz_formats import (apply_bytes, byte_mutation, ints, json_text, json_values, mutate_png, mutate_safetensors,
                          parse_safetensors, png_bytes, png_chunks, png_mutation, safetensors_bytes,
                          safetensors_mutation, text)
from fuzz_requests import request_targets, write_record_seed, write_request_seeds
from fuzz_streams import codec_targets, write_codec_seeds

CHECKPOINT_KEYS = [f"latentforge.{k}" for k in ("kind", "config", "value_range", "data", "step", "version",
                                                 "attributes")]
MACHINE = ("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")   # the TensorRT and GPU the seed engine claims
IDENTITY = {"kind": "vae", "data": "random", "seed": 0}


@dataclass
class RunConfig:
    """What save_state keeps of a training run's settings."""
    command: str = "latentforge train vae --data random"


def tiny_vae():
    import torch

    from latentforge.models import ConvVAE, VAEConfig

    torch.manual_seed(0)
    return ConvVAE(VAEConfig(base_channels=4, latent_dim=8, image_size=32))


@dataclass
class Target:
    mutation: st.SearchStrategy
    write: Callable[[Path, Path, list], Path]   # (seed folder, case folder, mutations) -> the path to load
    seeds: list[str]
    must_refuse: Callable[[str, list], bool] = lambda seed, mutations: False
    load: Callable[[Path], str] | None = None   # what loading means, for targets defined outside `load` below


def build_seeds(folder: Path) -> None:
    """Valid files of every kind, made with latentforge's own writers (tiny models, a few pixels)."""
    import numpy as np
    import torch
    from PIL import Image

    from latentforge.checkpoint import save_checkpoint
    from latentforge.directions import save_directions
    from latentforge.export import export_onnx
    from latentforge.export.tensorrt import Engine
    from latentforge.models import DCGAN, ConvVAE, DCGANConfig, VAEConfig

    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(base_channels=4, latent_dim=8, image_size=32)).eval()
    save_checkpoint(folder / "vae.safetensors", vae, data="random", step=0,
                    extra={"attributes": json.dumps({"smile": [0.5] * 8})})
    save_checkpoint(folder / "dcgan.safetensors", DCGAN(DCGANConfig(image_size=32, channels=1, latent_dim=4, ngf=4,
                                                                    ndf=4)).eval(), data="random", step=0)
    from latentforge.training.state import save_state

    resumable = tiny_vae()
    optimizer = torch.optim.Adam(resumable.parameters())
    resumable(torch.zeros(2, 3, 32, 32))[0].sum().backward()
    optimizer.step()
    (folder / "run").mkdir()
    save_state(folder / "run" / "checkpoint.safetensors", resumable, [optimizer], "random", 1, RunConfig(), IDENTITY,
               1.0)
    save_directions(folder / "attrs.safetensors", {"smile": np.ones(8, np.float32), "age": np.zeros(8, np.float32)},
                    checkpoint="vae.safetensors", data="random", method="mean difference")
    onnx_path = export_onnx(folder / "vae.safetensors", folder / "vae.onnx").path
    import onnx

    model = onnx.load(str(onnx_path))
    onnx.save_model(model, str(folder / "vae_ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="vae_ext.onnx.data", size_threshold=512)
    meta = {p.key.removeprefix("latentforge."): p.value for p in model.metadata_props}
    import hashlib

    plan = b"engine bytes stand-in: the sidecar check runs before TensorRT sees them"
    sidecar = {"format": "latentforge-tensorrt/1", "tensorrt_version": MACHINE[0], "gpu_name": MACHINE[1],
               "compute_capability": MACHINE[2], "flags": [], "profile": {"min": 1, "opt": 1, "max": 4},
               "sha256": hashlib.sha256(plan).hexdigest(), "input": {"name": "z", "shape": [-1, 8], "dtype": "float32"},
               "output": {"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float32"}, "metadata": meta}
    Engine(plan, sidecar).write(folder / "vae.plan")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    images = {"rgb.png": Image.fromarray(rgb), "rgba.png": Image.fromarray(rgb).convert("RGBA"),
              "grey.png": Image.fromarray(rgb[..., 0]), "la.png": Image.fromarray(rgb[..., 0]).convert("LA"),
              "palette.png": Image.fromarray(rgb).convert("P"), "bits.png": Image.fromarray(rgb[..., 0]).convert("1"),
              "deep.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "rgb.jpg": Image.fromarray(rgb),
              "grey.jpg": Image.fromarray(rgb[..., 0]), "cmyk.jpg": Image.fromarray(rgb).convert("CMYK")}
    for name, image in images.items():
        image.save(folder / name)
    (folder / "labels").mkdir()
    for i in range(3):
        Image.fromarray(rgb[:, i:i + 12]).save(folder / "labels" / f"{i}.png")
    (folder / "labels.csv").write_text("filename,smile,age\n0.png,1,-1\n1.png,-1,1\n2.png,1,1\n")
    write_record_seed(folder)
    write_request_seeds(folder)
    write_codec_seeds(folder, rng)
    import av

    for name, codec in (("tiny.mp4", "libx264"), ("tiny.avi", "mpeg4")):
        with av.open(str(folder / name), "w") as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            for i in range(6):
                frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * i, np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)


def _write_safetensors(seed: Path, case: Path, mutations: list) -> Path:
    parsed = parse_safetensors(seed.read_bytes())
    for mutation in mutations:
        mutate_safetensors(parsed, mutation)
    path = case / "model.safetensors"
    path.write_bytes(safetensors_bytes(parsed))
    return path


def _write_state(seed: Path, case: Path, mutations: list) -> Path:
    _write_safetensors(seed, case, mutations).rename(case / "checkpoint.state.safetensors")
    return case / "checkpoint.safetensors"


# --- ONNX: metadata_props and external data entries of a parsed ModelProto, then bytes.

ESCAPES = ["../outside.bin", "/etc/hostname", "link.bin", "sub/../../outside.bin", "..", "/", "./../outside.bin"]
onnx_mutation = st.one_of(
    st.tuples(st.just("meta"), st.one_of(st.sampled_from(CHECKPOINT_KEYS + [
        "latentforge.latent_dim", "latentforge.image_shape", "latentforge.image_layout", "latentforge.part",
        "latentforge.precision", "latentforge.golden"]), st.text(max_size=12)), json_text),
    st.tuples(st.just("drop_meta"), st.sampled_from(["latentforge.kind", "latentforge.latent_dim",
                                                     "latentforge.image_shape", "latentforge.value_range"])),
    st.tuples(st.just("location"), st.integers(0, 100), st.one_of(st.sampled_from(ESCAPES + [
        "missing.bin", "", "vae_ext.onnx.data\x00x", "vae_ext.onnx"]), st.text(max_size=20))),
    st.tuples(st.just("offset"), st.integers(0, 100), st.one_of(ints, text)),
    st.tuples(st.just("length"), st.integers(0, 100), st.one_of(ints, text)),
    st.tuples(st.just("bytes"), byte_mutation),
)


def _escapes(location: str) -> bool:
    return location in ESCAPES


def _write_onnx(seed: Path, case: Path, mutations: list) -> Path:
    import onnx

    folder = case / "model"
    folder.mkdir()
    data = seed.with_name(seed.name + ".data")
    if data.exists():
        (folder / data.name).write_bytes(data.read_bytes())
        (case / "outside.bin").write_bytes(data.read_bytes())   # what an escaping path would reach: real weights
        (folder / "link.bin").symlink_to("../outside.bin")
    model = onnx.load(str(seed), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    after = []
    for op, *args in mutations:
        if op == "meta":
            entry = next((p for p in model.metadata_props if p.key == args[0]), None) or model.metadata_props.add()
            entry.key, entry.value = args[0], args[1]
        elif op == "drop_meta":
            keep = [(p.key, p.value) for p in model.metadata_props if p.key != args[0]]
            del model.metadata_props[:]
            for key, value in keep:
                model.metadata_props.add(key=key, value=value)
        elif op in ("location", "offset", "length") and external:
            tensor = external[args[0] % len(external)]
            entry = next((e for e in tensor.external_data if e.key == op), None) or tensor.external_data.add(key=op)
            entry.value = str(args[1])
        elif op == "bytes":
            after.append(args[0])
    raw = model.SerializeToString()
    for mutation in after:
        raw = apply_bytes(raw, mutation)
    path = folder / seed.name
    path.write_bytes(raw)
    return path


def _onnx_must_refuse(seed: str, mutations: list) -> bool:
    """An escaping location of the external-data seed must be refused whatever else changed (the last location
    given for a tensor counts)."""
    if seed != "vae_ext.onnx":
        return False
    last = {}
    for op, *args in mutations:
        if op == "location":
            last[args[0]] = args[1]
    return any(_escapes(v) for v in last.values())


# --- TensorRT sidecar: its JSON fields, its bytes, and the plan's bytes.

sidecar_mutation = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(["format", "tensorrt_version", "gpu_name", "compute_capability",
                                                 "flags", "profile", "sha256", "input", "output", "metadata", "x"]),
              json_values),
    st.tuples(st.just("drop"), st.sampled_from(["format", "sha256", "metadata", "gpu_name", "input"])),
    st.tuples(st.just("meta"), st.sampled_from(["kind", "latent_dim", "image_shape", "value_range", "precision",
                                                "part", "attributes", "image_layout"]), json_values),
    st.tuples(st.just("whole"), json_values),
    st.tuples(st.just("bytes"), byte_mutation),
    st.tuples(st.just("plan"), byte_mutation),
)


def _write_sidecar(seed: Path, case: Path, mutations: list) -> Path:
    sidecar, plan = json.loads(seed.with_name(seed.name + ".json").read_text()), seed.read_bytes()
    after = []
    for op, *args in mutations:
        if op == "field" and isinstance(sidecar, dict):
            sidecar[args[0]] = args[1]
        elif op == "drop" and isinstance(sidecar, dict):
            sidecar.pop(args[0], None)
        elif op == "meta" and isinstance(sidecar, dict) and isinstance(sidecar.get("metadata"), dict):
            sidecar["metadata"][args[0]] = args[1]
        elif op == "whole":
            sidecar = args[0]
        elif op == "bytes":
            after.append(args[0])
        elif op == "plan":
            plan = apply_bytes(plan, args[0])
    raw = json.dumps(sidecar).encode()
    for mutation in after:
        raw = apply_bytes(raw, mutation)
    path = case / "model.plan"
    path.write_bytes(plan)
    path.with_name("model.plan.json").write_bytes(raw)
    return path


# --- Images and labelled folders.

def _write_image(seed: Path, case: Path, mutations: list) -> Path:
    data = seed.read_bytes()
    if seed.suffix == ".png":
        chunks = png_chunks(data)
        after = []
        for mutation in mutations:
            (after.append(mutation[1]) if mutation[0] == "bytes" else mutate_png(chunks, mutation))
        data = png_bytes(chunks)
        for mutation in after:
            data = apply_bytes(data, mutation)
    else:
        for mutation in mutations:
            if mutation[0] == "bytes":
                data = apply_bytes(data, mutation[1])
    path = case / seed.name
    path.write_bytes(data)
    return path


labels_mutation = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, 20), st.integers(0, 5), st.one_of(text, st.sampled_from([
        "../rgb.png", "/etc/hostname", "labels.csv", "sub/../0.png", "0.png", "nan", "1e999", "x" * 200_000]))),
    st.tuples(st.just("row"), st.lists(text, max_size=5)),
    st.tuples(st.just("drop_row"), st.integers(0, 20)),
    st.tuples(st.just("bytes"), byte_mutation),
)


def _write_labels(seed: Path, case: Path, mutations: list) -> Path:
    folder = case / "images"
    folder.mkdir()
    for image in (seed / "labels").iterdir():
        (folder / image.name).write_bytes(image.read_bytes())
    (case / "rgb.png").write_bytes((seed / "rgb.png").read_bytes())
    rows = list(csv.reader(io.StringIO((seed / "labels.csv").read_text())))
    after = []
    for op, *args in mutations:
        if op == "cell" and rows:
            row = rows[args[0] % len(rows)]
            if row:
                row[args[1] % len(row)] = args[2]
        elif op == "row":
            rows.append(args[0])
        elif op == "drop_row" and rows:
            del rows[args[0] % len(rows)]
        elif op == "bytes":
            after.append(args[0])
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    raw = buffer.getvalue().encode("utf-8", "surrogatepass")
    for mutation in after:
        raw = apply_bytes(raw, mutation)
    (case / "labels.csv").write_bytes(raw)
    return folder


def _write_bytes(seed: Path, case: Path, mutations: list) -> Path:
    data = seed.read_bytes()
    for mutation in mutations:
        data = apply_bytes(data, mutation[1])
    path = case / seed.name
    path.write_bytes(data)
    return path


TARGETS = {
    "checkpoint": Target(safetensors_mutation(CHECKPOINT_KEYS), _write_safetensors,
                         ["vae.safetensors", "dcgan.safetensors"]),
    "state": Target(safetensors_mutation(["step", "run", "train", "param_groups", "wall_s"]), _write_state,
                    ["run/checkpoint.state.safetensors"]),
    "directions": Target(safetensors_mutation(["latentforge.kind", "latentforge.latent_dim"]), _write_safetensors,
                         ["attrs.safetensors"]),
    "onnx": Target(onnx_mutation, _write_onnx, ["vae.onnx", "vae_ext.onnx"], _onnx_must_refuse),
    "sidecar": Target(sidecar_mutation, _write_sidecar, ["vae.plan"]),
    "image": Target(st.one_of(png_mutation, st.tuples(st.just("bytes"), byte_mutation)), _write_image,
                    ["rgb.png", "rgba.png", "grey.png", "la.png", "palette.png", "bits.png", "deep.png", "rgb.jpg",
                     "grey.jpg", "cmyk.jpg"]),
    "labels": Target(labels_mutation, _write_labels, ["."]),
    "video": Target(st.tuples(st.just("bytes"), byte_mutation), _write_bytes, ["tiny.mp4", "tiny.avi"]),
}
TARGETS.update(request_targets(Target))   # tuning records and server requests (tests/fuzz_requests.py)
TARGETS.update(codec_targets(Target))     # codec streams (tests/fuzz_streams.py)


def load(target: str, path: Path) -> str:
    """What loading means for `target`, run in the worker; returns a short description of what loaded."""
    import numpy as np

    if TARGETS[target].load is not None:
        return TARGETS[target].load(path)
    if target == "checkpoint" or target == "onnx":
        import latentforge

        model = latentforge.load(path, backend="torch" if target == "checkpoint" else "onnxruntime", threads=1,
                                 verify=target == "onnx")   # an .onnx as the server loads it: its golden check run
        out = model.sample(1, seed=0)
        assert out.dtype in (np.uint8, np.float32) and len(out) == 1, (out.dtype, out.shape)
        return f"{model.kind} {list(out.shape)}"
    if target == "state":
        import torch

        from latentforge.training.state import load_state

        model = tiny_vae()
        optimizer = torch.optim.Adam(model.parameters())
        step, _ = load_state(path, model, [optimizer], IDENTITY, "cpu")
        model(torch.zeros(1, 3, 32, 32))[0].sum().backward()
        optimizer.step()   # the loaded moments must fit the parameters they update
        return f"resumed at step {step}"
    if target == "directions":
        from latentforge.directions import load_directions

        return f"{sorted(load_directions(path, 8))}"
    if target == "sidecar":
        from latentforge.runtime.artifact import from_onnx_metadata
        from latentforge.runtime.engine_sidecar import check_engine
        from latentforge.runtime.trt_backend import sidecar_metadata

        info = from_onnx_metadata(sidecar_metadata(check_engine(path, MACHINE)), path)
        return f"{info.kind} {info.latent_dim}"
    if target == "image":
        from latentforge.training.data.folder import load_image

        image = load_image(str(path), 16)
        assert image.dtype == np.uint8 and image.shape == (16, 16, 3), (image.dtype, image.shape)
        return "image"
    if target == "labels":
        from latentforge.training.data.folder import load_folder

        data = load_folder(str(path), 16, str(path.parent / "labels.csv"))
        return f"{data.size('train')} + {data.size('test')} images, {data.attribute_names}"
    if target == "video":
        from latentforge.runtime.video import open_source

        source = open_source(str(path))
        try:
            frames = 0
            for frame in source:
                assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3, frame.shape
                frames += 1
                if frames >= 64:
                    break
        finally:
            source.close()
        return f"{frames} frames"
    raise KeyError(target)

