"""`latentforge filter` (frames in, edited frames out) and `latentforge backends` (what can run here)."""
from __future__ import annotations

import argparse
import math
import sys
import time


def _edit(text: str) -> tuple[str, float]:
    name, sep, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = math.nan
    if not sep or not name or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"an edit is ATTR=AMOUNT with a finite number, e.g. eyes_open=1.5, "
                                         f"got {text!r}")
    return name, value


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a cosine-similarity threshold in (0, 1), e.g. 0.98, got {text!r}")
    return value


def cmd_filter(args) -> None:
    from tqdm import tqdm

    from latentforge import load
    from latentforge.errors import InputError
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


def cmd_backends(args) -> None:
    from latentforge import backends

    for status in backends():
        print(status.line())


def add_commands(sub) -> None:
    p = sub.add_parser("filter", help="edit a video, a folder of images or a camera stream frame by frame")
    p.add_argument("model", help="VAE checkpoint (.safetensors), exported filter graph (.onnx) or engine (.plan)")
    p.add_argument("--input", required=True, help="VIDEO file, folder of images, or camera:N")
    p.add_argument("--output", required=True, help="VIDEO file (.mp4 .mkv .mov .avi .webm) or folder for PNGs")
    p.add_argument("--edit", action="append", type=_edit, metavar="ATTR=AMOUNT",
                   help="move along an attribute direction, e.g. eyes_open=1.5 (repeatable)")
    p.add_argument("--attributes", help="attribute directions (.safetensors from `latentforge attributes`)")
    p.add_argument("--skip-similar", type=_threshold, metavar="T",
                   help="reuse the last output for frames this cosine-similar to the last processed one")
    p.add_argument("--temperature", type=float, default=0.0, help="posterior noise: 0 deterministic, 1 sampled")
    p.add_argument("--seed", type=int, default=0, help="noise seed when temperature > 0")
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | openvino | tensorrt | torch")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 | int8 (exported variants)")
    p.add_argument("--threads", type=int, help="inference threads (default: one per physical core)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("backends", help="list the runtime backends, available or not and why")
    p.set_defaults(func=cmd_backends)
