"""`latentforge attributes` (named latent directions from labels) and `latentforge edit` (encode, move, decode)."""
from __future__ import annotations

import os
from pathlib import Path

from latentforge.errors import InputError

from .arguments import add_backend, add_edits, alias

METHOD = "mean posterior mean of the high group minus the low group (split at the attribute's midpoint)"
SAMPLES_METHOD = ("mean latent of the high group minus the low group of {n} generator samples (seed {seed}) read by "
                  "the data's readout (split at the midpoint of the labels' range)")


def cmd_attributes(args) -> None:
    from latentforge.checkpoint import load_checkpoint
    from latentforge.directions import save_directions
    from latentforge.files import check_output_path
    from latentforge.training.attributes import attribute_directions
    from latentforge.training.data import open_data

    if args.n < 1:
        raise InputError(f"-n must be a positive number of images, got {args.n}")
    out = check_output_path(args.output)
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"output must end in .safetensors, got {str(out)!r}")
    embed = args.embed and check_output_path(args.embed)
    if embed and (embed.suffix.lower() != ".safetensors" or embed.resolve() == Path(args.checkpoint).resolve()):
        raise InputError(f"--embed writes a new checkpoint: a .safetensors path other than the input, got {str(embed)!r}")
    model, info = _encoding(args.checkpoint, load_checkpoint)
    data = open_data(args.data, image_size=info.config["image_size"], labels=args.labels)
    if data.channels != info.config["channels"]:
        raise InputError(f"{data.name!r} has {data.channels}-channel images but the model takes "
                         f"{info.config['channels']}; use the data it was trained on ({info.data})")
    if not data.attribute_names:
        raise InputError(f"{data.name!r} has no attribute labels; pass --labels CSV (filename,attr1,attr2,...)")
    if args.from_samples:
        directions, method = _sample_directions(model, info, data, args.n)
    else:
        directions, method = attribute_directions(model, info.value_range, data, n=args.n), METHOD
    if args.independent:
        from latentforge.training.attributes import independent

        directions, method = independent(directions), method + "; each with the others projected out (--independent)"
    save_directions(out, directions, checkpoint=str(args.checkpoint), data=data.name, method=method)
    if embed:   # the model and its directions in one file, which `load` and the Filter use without --attributes
        import json

        from latentforge.checkpoint import save_checkpoint

        vectors = json.dumps({k: v.tolist() for k, v in directions.items()})
        save_checkpoint(embed, model, data=info.data, step=info.step, extra=dict(info.extra, attributes=vectors))
        print(f"wrote {embed} (the checkpoint with these directions in its metadata)")
    for name, d in directions.items():
        print(f"{name}: |d| = {float((d ** 2).sum() ** 0.5):.3f}")
    source = f"{args.n} generator samples" if args.from_samples else f"{min(args.n, data.size('train'))} {data.name} images"
    print(f"wrote {out} ({len(directions)} directions, from {source})")


def _sample_directions(model, info, data, n: int, seed: int = 0):
    """--from-samples: directions fitted on the generator's own samples, read by the data's readout (trained on its
    labels), for a gan-encoder (training/attributes.py, sample_directions)."""
    from latentforge.training.attributes import sample_directions
    from latentforge.training.evaluate.readout import readout_for

    if info.kind != "gan-encoder":
        raise InputError(f"--from-samples fits directions on a generator's samples; {info.kind} is not a gan-encoder "
                         "(drop --from-samples)")
    readout, _ = readout_for(data)
    if readout.classify:
        raise InputError(f"--from-samples needs factor labels; {data.name!r} has classes (drop --from-samples)")
    names = list(data.attribute_names)
    directions = sample_directions(model, info.value_range, readout.factors, names, readout.low, readout.high,
                                   n=n, seed=seed)
    return directions, SAMPLES_METHOD.format(n=n, seed=seed)


def cmd_edit(args) -> None:
    import numpy as np

    from latentforge import load
    from latentforge.directions import load_directions
    from latentforge.files import check_output_path
    from latentforge.images import save_png

    if not args.edit:
        raise InputError("edit needs at least one --edit ATTR=AMOUNT, e.g. --edit eyes_open=+1.5")
    amounts = dict(args.edit)
    files, root = _inputs(args.input)
    single = root is None
    out = check_output_path(args.output) if single else Path(args.output)
    if single and out.suffix.lower() != ".png":
        raise InputError(f"output for one image must end in .png, got {str(out)!r}")
    if not single and out.exists() and not out.is_dir():
        raise InputError(f"--input is a folder, so -o must be a folder; {str(out)!r} is a file")
    model = load(args.checkpoint, backend=args.backend)
    if not model.has_encoder:
        raise InputError(f"edit needs a checkpoint that encodes (a VAE, or a gan-encoder for a GAN); "
                         f"{args.checkpoint} is a {model.kind} model without an encoder")
    if args.attributes:
        directions = load_directions(args.attributes, model.latent_dim)
    elif model.attributes:
        directions = model.attributes
    else:
        directions = _directions_from_training_data(args.checkpoint)
    images = np.stack([_read(f, model.image_shape) for f in files])
    edited = model.edit(images, amounts, directions)
    if single:
        save_png(edited[0], out)
        print(f"wrote {out}")
        return
    out.mkdir(parents=True, exist_ok=True)
    for f, image in zip(files, edited):
        target = out / Path(os.path.relpath(f, root)).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_png(image, target)
    print(f"wrote {len(files)} edited images to {out}")


def _encoding(path, load_checkpoint):
    from latentforge.checkpoint import ENCODING_KINDS, read_info

    kind = read_info(path).kind
    if kind not in ENCODING_KINDS:
        raise InputError(f"attribute directions live in the latent space of a model that encodes (a VAE, or a "
                         f"gan-encoder for a GAN: `latentforge train gan-encoder GAN_CHECKPOINT`); {path} is a "
                         f"{kind} checkpoint")
    return load_checkpoint(path)


def _directions_from_training_data(path) -> dict:
    """No attributes file and none in the checkpoint: learn them from the labelled data it was trained on."""
    from latentforge.checkpoint import load_checkpoint
    from latentforge.training.attributes import attribute_directions
    from latentforge.training.data import open_data

    model, info = load_checkpoint(path)
    data = open_data(info.data, image_size=info.config["image_size"]) if info.data in ("faces", "digits") else None
    if data is None or not data.attribute_names:
        raise InputError(f"{path} carries no attribute directions; make some with `latentforge attributes {path} "
                         "--data DIR --labels CSV -o attrs.safetensors` and pass --attributes attrs.safetensors")
    return attribute_directions(model, info.value_range, data)


def _inputs(spec: str) -> tuple[list[str], str | None]:
    """(image files, the folder they are under or None for one file)."""
    from latentforge.training.data.folder import IMAGE_EXTENSIONS, find_images

    if os.path.isdir(spec):
        files = [os.path.join(spec, f) for f in find_images(spec)]
        if not files:
            raise InputError(f"no png/jpg images in {spec}; point --input at an image or a folder of them")
        return files, spec
    if not os.path.isfile(spec):
        raise InputError(f"--input {spec!r} does not exist; give an image file or a folder of images")
    if not spec.lower().endswith(IMAGE_EXTENSIONS):
        raise InputError(f"--input {spec!r} is not a .png/.jpg/.jpeg image")
    return [spec], None


def _read(path: str, shape: tuple[int, int, int]):
    """An image file as uint8 [H, W, C] in the model's size and channels (centre crop, resize)."""
    import numpy as np

    from latentforge.errors import DataError
    from latentforge.training.data.folder import load_image

    try:
        rgb = load_image(path, shape[0])
    except DataError as e:
        raise InputError(str(e)) from None
    if shape[2] == 1:  # ITU-R 601 luma, as Pillow's convert("L")
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.rint(grey)[..., None].astype(np.uint8)
    return rgb


def add_commands(sub) -> None:
    p = sub.add_parser("attributes", help="named latent directions of a VAE or gan-encoder from labelled images")
    p.add_argument("checkpoint", help="VAE or gan-encoder checkpoint (.safetensors)")
    p.add_argument("--data", required=True, help="faces | digits | a folder of images (with --labels)")
    p.add_argument("--labels", help="CelebA-style CSV for a folder: filename,attr1,attr2,...")
    p.add_argument("-n", type=int, default=2000, help="training images to encode, or generator samples with "
                                                          "--from-samples (default 2000)")
    p.add_argument("--from-samples", action="store_true",
                   help="gan-encoder: fit the directions on the generator's own samples, read by the data's readout "
                        "(trained on its labels), instead of on encoded labelled images")
    p.add_argument("--independent", action="store_true",
                   help="project every other factor's direction out of each direction (InterFaceGAN's conditional "
                        "edit), so that an edit of one factor stops dragging correlated ones along")
    p.add_argument("-o", "--output", required=True, help="attrs.safetensors")
    p.add_argument("--embed", metavar="OUT.safetensors",
                   help="also write a copy of the checkpoint that carries the directions in its metadata")
    p.set_defaults(func=cmd_attributes)

    p = sub.add_parser("edit", help="encode images, move them along attribute directions, decode")
    p.add_argument("checkpoint", help="VAE or gan-encoder checkpoint (.safetensors)")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    alias(p, "--attr", add_edits(p, "e.g. eyes_open=+1.5; repeat for several (at least one)"))
    p.add_argument("--attributes", help="directions file from `latentforge attributes` (default: the checkpoint's, "
                                        "or learned from its faces/digits labels)")
    add_backend(p, "which runtime decodes (encoding is torch)")
    p.add_argument("-o", "--output", required=True, help="OUT.png for one image, a folder for a folder")
    p.set_defaults(func=cmd_edit)
