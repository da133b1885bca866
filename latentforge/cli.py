"""The `latentforge` command. Each subcommand imports what it needs only when it runs."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from .errors import InputError, LatentforgeError

# Modules that add more subcommands: each has add_commands(sub) that calls sub.add_parser(...) and
# set_defaults(func=...), and imports what its commands need only when they run.
COMMAND_MODULES: tuple[str, ...] = ("latentforge.cli_ops", "latentforge.export.command", "latentforge.cli_filter",
                                   "latentforge.cli_edit")


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches must be comma-separated integers like 1,16,128, got {text!r}")
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(out=args.out, train=args.train, steps=args.steps, bench=not args.no_bench)


def cmd_train(args) -> None:
    from latentforge.checkpoint import read_info
    from latentforge.training.train import TrainConfig, train

    try:
        options = json.loads(args.model_options) if args.model_options else {}
    except json.JSONDecodeError as e:
        raise InputError(f"--model-options is not valid JSON ({e.msg} at column {e.colno}): "
                         f"{args.model_options!r}; write it like '{{\"base_channels\": 16}}'") from None
    if not isinstance(options, dict):
        raise InputError(f"--model-options must be a JSON object, got {args.model_options!r}")
    if args.source and args.kind != "prior":
        raise InputError(f"only `train prior` takes a checkpoint argument ({args.source!r}); drop it for {args.kind}")
    for flag, name in (("--codebook-size", "codebook_size"), ("--code-dim", "code_dim")):
        if getattr(args, name) is not None:
            if args.kind != "vqvae":
                raise InputError(f"{flag} is a VQ-VAE option; {args.kind} has no codebook")
            options[name] = getattr(args, name)
    data, image_size = args.data or "faces", args.image_size
    if args.kind == "prior" and args.source:  # a prior learns the codes of its VQ-VAE's own training data
        vq = read_info(args.source)
        data, image_size = args.data or vq.data, image_size or vq.config.get("image_size")
    cfg = TrainConfig(kind=args.kind, data=data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                      image_size=image_size, latent_dim=args.latent_dim, beta=args.beta, lr=args.lr,
                      kl_warmup=args.kl_warmup, source=args.source,
                      seed=args.seed, labels=args.labels, model_options=options, sample_every=args.sample_every,
                      checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.no_progress,
                      critic_steps=args.critic_steps, gp_lambda=args.gp_lambda, unroll=args.unroll,
                      lr_decay_start=args.lr_decay_start,
                      command="latentforge " + shlex.join(args.argv))
    result = train(cfg)
    print(f"checkpoint: {result.checkpoint} (step {result.step}, {result.seconds:.0f} s)")


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


def cmd_bench(args) -> None:
    from latentforge.files import atomic_write_bytes, check_output_path
    from latentforge.runtime.bench import run_bench

    if args.json:
        check_output_path(args.json)
    report = run_bench(args.model, batches=args.batch, min_time=args.min_time, threads=args.threads,
                       compile=not args.no_compile)
    print(report.table())
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report.to_json(), indent=2).encode())


def cmd_evaluate(args) -> None:
    from latentforge.files import atomic_write_bytes, check_output_path
    from latentforge.training.evaluate import evaluate, format_table

    if args.json:
        check_output_path(args.json)
    options = {k: v for k, v in (("n", args.n), ("seed", args.seed), ("k", args.k)) if v is not None}
    result = evaluate(args.checkpoint, **options)
    print(format_table(result))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=2, default=float).encode())


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="latentforge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"latentforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="sample, walk, edit, export and benchmark the built-in faces VAE")
    p.add_argument("--out", default="demo_out", help="output folder (created)")
    p.add_argument("--train", action="store_true", help="train a fresh model instead of the shipped weights")
    p.add_argument("--steps", type=int, default=1500, help="training steps with --train")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark table")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model; writes RUN_DIR/checkpoint.safetensors")
    p.add_argument("kind", help="vae | dcgan | gan | wgan-gp | unrolled-gan | vqvae | prior")
    p.add_argument("source", nargs="?", help="prior: the VQ-VAE checkpoint whose codes it learns")
    p.add_argument("--data", help="faces | digits | stacked-digits | ring | grid (2-D points) | a folder of png/jpg "
                                  "images (default faces; a prior: its VQ-VAE's data)")
    p.add_argument("--labels", help="CelebA-style attributes CSV for a folder data set")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, choices=[32, 64, 128])
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (VAE)")
    p.add_argument("--kl-warmup", type=int, default=0, metavar="STEPS", help="VAE: ramp the KL weight from 0")
    p.add_argument("--codebook-size", type=int, help="VQ-VAE: number of codes K (default 256)")
    p.add_argument("--code-dim", type=int, help="VQ-VAE: width D of each code (default 32)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-options", help='extra model config as JSON, e.g. \'{"base_channels": 16}\'')
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR's checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--critic-steps", type=int, help="GANs: D/critic updates per G update (wgan-gp 5, others 1)")
    p.add_argument("--gp-lambda", type=float, default=10.0, help="wgan-gp: gradient penalty weight")
    p.add_argument("--unroll", type=int, default=5, help="unrolled-gan: D steps the generator looks ahead through")
    p.add_argument("--lr-decay-start", type=float, default=0.5,
                   help="GANs and priors: the lr decays linearly to 0 from this fraction of --steps "
                        "(1 = constant lr)")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (("sample", cmd_sample, "decode random latents to a PNG grid or .npy"),
                                 ("interpolate", cmd_interpolate, "decode a walk between two latents")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("model", help="checkpoint (.safetensors) or exported .onnx")
        p.add_argument("-o", "--output", required=True)
        p.add_argument("--seed", type=int)
        p.add_argument("--backend", default="auto", help="auto | onnxruntime | openvino | tensorrt | torch")
        p.add_argument("--scale", type=_positive, default=2, help="enlarge PNG pixels this many times")
        if name == "sample":
            p.add_argument("-n", type=int, default=64)
            p.add_argument("--temperature", type=float, default=1.0)
            p.add_argument("--top-k", type=int, help="VQ priors: draw each code from the k most likely")
            p.add_argument("--decoder", help="with an exported VQ prior .onnx: its VQ decoder .onnx")
        else:
            p.add_argument("--steps", type=int, default=10)
            p.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
        p.set_defaults(func=func)

    p = sub.add_parser("bench", help="latency and throughput of every backend beside its peers")
    p.add_argument("model", help="checkpoint (.safetensors) or exported .onnx")
    p.add_argument("--batch", type=_batches, default=(1, 16, 128), help="comma-separated batch sizes")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed repeats per row")
    p.add_argument("--threads", type=int, help="threads for latentforge's backends (peers keep their defaults)")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (it compiles for ~20 s)")
    p.add_argument("--json", help="write the report as JSON here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("evaluate", help="held-out metrics of a checkpoint (bounds, mode coverage, FD, ...)")
    p.add_argument("checkpoint")
    p.add_argument("-n", type=int, help="samples or held-out images to use (default: the protocol's)")
    p.add_argument("--k", type=int, help="importance samples for the IWAE bound (VAEs)")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", help="write the full result as JSON here")
    p.set_defaults(func=cmd_evaluate)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args.func(args)
    except LatentforgeError as e:
        print(f"latentforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentforge: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
