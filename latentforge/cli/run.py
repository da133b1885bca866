"""`latentforge sample` and `interpolate` (latents in, images out) and `latentforge filter` (frames in, edited
frames out)."""
from __future__ import annotations

import argparse
import math
import sys
import time

from latentforge.errors import InputError

from .arguments import add_backend, add_edits, add_model, add_precision, add_threads, positive_int


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a cosine-similarity threshold in (0, 1), e.g. 0.98, got {text!r}")
    return value


def cmd_sample(args) -> None:
    import numpy as np

    from latentforge import load
    from latentforge.files import atomic_write, check_output_path
    from latentforge.images import save_grid

    out = check_output_path(args.output)
    if out.suffix.lower() not in (".png", ".npy"):
        raise InputError(f"output must end in .png (a grid) or .npy (the array), got {str(out)!r}")
    model = load(args.model, backend=args.backend, decoder=args.decoder)
    if model.point_dim and out.suffix.lower() != ".npy":
        raise InputError(f"{args.model} is a point model: its samples are float32 [n, {model.point_dim}] "
                         f"coordinates; write them to a .npy, not {str(out)!r}")
    if args.top_k is not None and not model.codebook_size:
        raise InputError(f"--top-k applies to VQ priors (code sampling); {args.model} is a {model.kind}")
    extra = {"top_k": args.top_k} if args.top_k is not None else {}
    images = model.sample(args.n, seed=args.seed, temperature=args.temperature, **extra)
    if out.suffix.lower() == ".npy":
        def write_npy(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, images, allow_pickle=False)

        atomic_write(out, write_npy)
    else:
        save_grid(images, out, scale=args.scale)
    print(f"wrote {out} ({len(images)} {'points' if model.point_dim else 'images'} "
          f"from {model.backend})")


def cmd_interpolate(args) -> None:
    from latentforge import interpolate, latents, load
    from latentforge.files import check_output_path
    from latentforge.images import save_grid

    out = check_output_path(args.output)
    if out.suffix.lower() != ".png":
        raise InputError(f"output must end in .png (one strip of images), got {str(out)!r}")
    model = load(args.model, backend=args.backend)
    z0, z1 = latents(2, model.latent_dim, seed=args.seed)
    images = model.decode(interpolate(z0, z1, args.steps, args.method))
    save_grid(images, out, nrow=len(images), scale=args.scale)
    print(f"wrote {out} ({args.steps} steps, {args.method})")


def cmd_filter(args) -> None:
    from tqdm import tqdm

    from latentforge import load
    from latentforge.runtime.filter import Filter
    from latentforge.runtime.video import open_sink, open_source

    edits = dict(args.edit or [])
    if len(edits) != len(args.edit or []):
        raise InputError("each attribute may be edited once; combine the amounts into one --edit")
    # Cheap checks first: a bad output or input fails before seconds of model loading.
    source = open_source(args.input)
    try:
        sink = open_sink(args.output, source.fps)
        model = load(args.model, backend=args.backend, threads=args.threads, precision=args.precision)
        f = Filter(model, edits, temperature=args.temperature, attributes=args.attributes,
                   skip_similar=args.skip_similar, seed=args.seed)
    except BaseException:
        source.close()
        raise
    bar = tqdm(total=source.count, unit="frame", disable=args.no_progress, file=sys.stderr)
    shown = time.perf_counter()
    outputs = f.stream(source, drop=source.live)
    try:
        for out in outputs:
            sink.write(out)
            bar.update()
            if time.perf_counter() - shown > 0.5:
                s = f.stats
                bar.set_postfix(fps=f"{s.snapshot()['fps']:.0f}", dropped=s.dropped, skipped=s.skipped)
                shown = time.perf_counter()
    finally:
        outputs.close()  # stops the capture and inference threads before their source is closed under them
        bar.close()
        source.close()
        sink.close()  # also after Ctrl-C or an error: the output stays valid up to its last frame
        print(f"{f.backend} ({f.path}): {f.summary()}", file=sys.stderr)
        print(f"wrote {sink.written} frames to {args.output}")


def add_commands(sub) -> None:
    for name, func, helptext in (("sample", cmd_sample, "decode random latents to a PNG grid or .npy"),
                                 ("interpolate", cmd_interpolate, "decode a walk between two latents")):
        p = sub.add_parser(name, help=helptext)
        add_model(p)
        p.add_argument("-o", "--output", required=True)
        p.add_argument("--seed", type=int)
        add_backend(p)
        p.add_argument("--scale", type=positive_int, default=2, help="enlarge PNG pixels this many times")
        if name == "sample":
            p.add_argument("-n", type=int, default=64)
            p.add_argument("--temperature", type=float, default=1.0)
            p.add_argument("--top-k", type=int, help="VQ priors: draw each code from the k most likely")
            p.add_argument("--decoder", help="with an exported VQ prior .onnx: its VQ decoder .onnx")
        else:
            p.add_argument("--steps", type=int, default=10)
            p.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
        p.set_defaults(func=func)

    p = sub.add_parser("filter", help="edit a video, a folder of images or a camera stream frame by frame")
    add_model(p, "VAE or gan-encoder checkpoint (.safetensors), exported filter graph (.onnx) or engine (.plan)")
    p.add_argument("--input", required=True, help="VIDEO file, folder of images, or camera:N")
    p.add_argument("--output", required=True, help="VIDEO file (.mp4 .mkv .mov .avi .webm) or folder for PNGs")
    add_edits(p, "move along an attribute direction, e.g. eyes_open=1.5 (repeatable)")
    p.add_argument("--attributes", help="attribute directions (.safetensors from `latentforge attributes`)")
    p.add_argument("--skip-similar", type=_threshold, metavar="T",
                   help="reuse the last output for frames this cosine-similar to the last processed one")
    p.add_argument("--temperature", type=float, default=0.0, help="posterior noise: 0 deterministic, 1 sampled")
    p.add_argument("--seed", type=int, default=0, help="noise seed when temperature > 0")
    add_backend(p)
    add_precision(p, "which exported variant runs (MODEL.fp16.onnx for fp16, ...)")
    add_threads(p, "inference threads (default: one per physical core)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_filter)
