"""`latentforge compress` (images -> one .lfz stream) and `latentforge decompress` (.lfz -> PNGs)."""
from __future__ import annotations

from pathlib import Path

from latentforge.errors import InputError

from .arguments import add_backend, add_threads


def cmd_compress(args) -> None:
    import numpy as np

    from latentforge.files import atomic_write_bytes, check_output_path
    from latentforge.runtime.codec import compress
    from latentforge.runtime.codec_models import load_codec_model
    from latentforge.training.data.folder import load_image

    out = check_output_path(args.output)
    if out.suffix.lower() != ".lfz":
        raise InputError(f"output must end in .lfz, got {str(out)!r}")
    for path in args.inputs:
        if not Path(path).is_file():
            raise InputError(f"input image {path!r} does not exist; give PNG or JPEG files")
    model, point = load_codec_model(args.model, args.backend, args.threads, args.quality)
    size = model.image_shape[0]
    images = np.stack([load_image(path, size) for path in args.inputs])
    data = compress(model, images, point=point)
    atomic_write_bytes(out, data)
    print(f"wrote {out}: {len(images)} images of {size}x{size}, {len(data)} bytes, "
          f"{8 * len(data) / images[:, :, :, 0].size:.3f} bits per pixel (centre-cropped and resized to the "
          f"model's {size}x{size})")


def cmd_decompress(args) -> None:
    from latentforge.errors import StreamError
    from latentforge.files import atomic_write_all, check_output_path
    from latentforge.images import png_writer
    from latentforge.lfz import unpack
    from latentforge.runtime.codec import decompress
    from latentforge.runtime.codec_models import load_codec_model

    source = Path(args.stream)
    if not source.is_file():
        raise InputError(f"stream {str(source)!r} does not exist; give a .lfz file made by `latentforge compress`")
    data = source.read_bytes()
    header, _ = unpack(data)   # a broken stream is refused before the model loads
    out = Path(args.output)
    single = out.suffix.lower() == ".png"
    if single and header.count != 1:
        raise StreamError(f"{str(source)!r} holds {header.count} images; give a folder as -o, not {str(out)!r}")
    if not single and not out.is_dir():
        raise InputError(f"output folder {str(out)!r} does not exist; create it first, or give FILE.png for a "
                         "stream of one image")
    targets = [out] if single else [out / f"{source.stem}_{i:04d}.png" for i in range(header.count)]
    for target in targets:
        check_output_path(target)
    images = decompress(data, load_codec_model(args.model, args.backend, args.threads, point=header.point)[0])
    atomic_write_all([(target, png_writer(image)) for image, target in zip(images, targets)])   # all or none
    print(f"wrote {len(targets)} image(s) to {out}")


def add_commands(sub) -> None:
    p = sub.add_parser("compress", help="compress images into one .lfz stream with a learned codec")
    p.add_argument("model", help="'faces' (the shipped codec), a VQ prior checkpoint, or a VAE checkpoint with "
                   "NAME.codec.safetensors beside it")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG or JPEG images")
    p.add_argument("-o", "--output", required=True, help="OUT.lfz")
    p.add_argument("--quality", type=int, default=None,
                   help="operating point, 1 = lowest rate: 1-6 for 'faces' (default 6, the VQ prior), 1-5 for a VAE "
                   "(default 1); see docs/codec.md")
    add_backend(p)
    add_threads(p, "CPU threads; default one per physical core")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decode a .lfz stream to PNG images")
    p.add_argument("stream", help="a .lfz file from `latentforge compress`")
    p.add_argument("-o", "--output", required=True, help="a folder (one PNG per image) or FILE.png (one image)")
    p.add_argument("--model", default=None,
                   help="the model that compressed it; default: the shipped model of the stream's operating point")
    add_backend(p)
    add_threads(p, "CPU threads; default one per physical core")
    p.set_defaults(func=cmd_decompress)
