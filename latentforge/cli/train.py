"""`latentforge train` (a model from data; writes RUN_DIR/checkpoint.safetensors) and `latentforge evaluate`."""
from __future__ import annotations

import json
import shlex

from latentforge.errors import InputError

SOURCE_KINDS = ("prior", "gan-encoder")   # kinds trained on top of another checkpoint, given as `source`


def cmd_train(args) -> None:
    from latentforge.checkpoint import read_info
    from latentforge.training import distributed
    from latentforge.training.train import TrainConfig, train

    try:
        options = json.loads(args.model_options) if args.model_options else {}
    except json.JSONDecodeError as e:
        raise InputError(f"--model-options is not valid JSON ({e.msg} at column {e.colno}): "
                         f"{args.model_options!r}; write it like '{{\"base_channels\": 16}}'") from None
    if not isinstance(options, dict):
        raise InputError(f"--model-options must be a JSON object, got {args.model_options!r}")
    if args.source and args.kind not in SOURCE_KINDS:
        raise InputError(f"only `train prior` and `train gan-encoder` take a checkpoint argument ({args.source!r}); "
                         f"drop it for {args.kind}")
    for flag, name in (("--codebook-size", "codebook_size"), ("--code-dim", "code_dim")):
        if getattr(args, name) is not None:
            if args.kind != "vqvae":
                raise InputError(f"{flag} is a VQ-VAE option; {args.kind} has no codebook")
            options[name] = getattr(args, name)
    data, image_size = args.data or "faces", args.image_size
    if args.kind in SOURCE_KINDS and args.source:  # a prior or encoder learns its source model's own training data
        source = read_info(args.source)
        data, image_size = args.data or source.data, image_size or source.config.get("image_size")
    cfg = TrainConfig(kind=args.kind, data=data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                      image_size=image_size, latent_dim=args.latent_dim, beta=args.beta, lr=args.lr,
                      kl_warmup=args.kl_warmup, source=args.source,
                      seed=args.seed, labels=args.labels, model_options=options, sample_every=args.sample_every,
                      checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.no_progress,
                      critic_steps=args.critic_steps, gp_lambda=args.gp_lambda, unroll=args.unroll,
                      lr_decay_start=args.lr_decay_start, feature_weight=args.feature_weight,
                      latent_weight=args.latent_weight, init_from=args.init_from, d_lr=args.d_lr,
                      gan_loss=args.gan_loss, g_ema=args.g_ema, r1=args.r1,
                      command="latentforge " + shlex.join(_without_nproc(args.argv)))
    if args.nproc_per_node is not None and distributed.world_from_env().size == 1:  # checked above, run below
        if args.nproc_per_node < 1:
            raise InputError(f"--nproc-per-node must be a positive integer, got {args.nproc_per_node}")
        distributed.check_can_split(cfg.kind, cfg.batch_size, distributed.World(size=args.nproc_per_node))
        distributed.torchrun(args.nproc_per_node, ["-m", "latentforge.cli", *_without_nproc(args.argv)])
        print(f"checkpoint: {cfg.out}/checkpoint.safetensors ({args.nproc_per_node} processes)")
        return
    if cfg.recipe_defaults() and distributed.world_from_env().leader:
        print(settings_line(cfg))
    result = train(cfg)
    if distributed.world_from_env().leader:
        print(f"checkpoint: {result.checkpoint} (step {result.step}, {result.seconds:.0f} s)")


def settings_line(cfg) -> str:
    """The settings a kind has its own defaults for on this data, as this run has them (a flag overrides)."""
    chosen = {name: (cfg.model_options if name == "model_options" else getattr(cfg, name))
              for name in cfg.recipe_defaults()}
    options = chosen.pop("model_options", {})
    text = ", ".join([f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.items()]
                     + [f"{k} {cfg.model_options[k]}" for k in options])
    return f"{cfg.kind} on {cfg.data}: {text}"


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line each torchrun rank runs: this one, less the flag that launched torchrun."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    return kept


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


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a model; writes RUN_DIR/checkpoint.safetensors")
    p.add_argument("kind", help="vae | dcgan | gan | wgan-gp | unrolled-gan | vqvae | prior | gan-encoder")
    p.add_argument("source", nargs="?", help="prior: the VQ-VAE checkpoint whose codes it learns; gan-encoder: the "
                                             "GAN checkpoint whose (frozen) generator it inverts")
    p.add_argument("--data", help="faces | digits | stacked-digits | ring | grid (2-D points) | a folder of png/jpg "
                                  "images (default faces; a prior: its VQ-VAE's data)")
    p.add_argument("--labels", help="CelebA-style attributes CSV for a folder data set")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, help="training steps (default 2000; GANs on ring/grid: their own, "
                                              "see docs/gans.md)")
    p.add_argument("--batch-size", type=int, help="default 64; GANs on ring/grid: their own")
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
    p.add_argument("--critic-steps", type=int, help="GANs: D/critic updates per G update (wgan-gp 5, others 1; "
                                                       "ring/grid: their own)")
    p.add_argument("--gp-lambda", type=float, help="wgan-gp: gradient penalty weight (default 10; ring/grid: "
                                                    "their own)")
    p.add_argument("--unroll", type=int, help="unrolled-gan: D steps the generator looks ahead through (default 5)")
    p.add_argument("--lr-decay-start", type=float,
                   help="GANs and priors: the lr decays linearly to 0 from this fraction of --steps "
                        "(1 = constant lr; default 0.5)")
    p.add_argument("--d-lr", type=float, help="GANs: the discriminator's own learning rate (TTUR, e.g. --lr 1e-4 "
                                              "--d-lr 4e-4; default: --lr)")
    p.add_argument("--gan-loss", choices=("ns", "hinge"), default="ns",
                   help="gan: the non-saturating loss (ns, default) or the hinge loss of SN-GAN/SAGAN")
    p.add_argument("--g-ema", type=float, default=None, metavar="DECAY",
                   help="GANs: sample, save and export an exponential moving average of the generator's weights "
                        "with this decay (e.g. 0.999; default 0: off, but 0.999 for wgan-gp on ring/grid and "
                        "unrolled-gan on ring and grid)")
    p.add_argument("--r1", type=float, default=None, metavar="GAMMA",
                   help="gan, unrolled-gan: penalize D's gradient on real samples, GAMMA/2 * |grad D(x)|^2 (R1; "
                        "e.g. 0.1; default 0: off, but 0.1 for unrolled-gan on grid)")
    p.add_argument("--feature-weight", type=float, default=1.0,
                   help="gan-encoder: weight of the discriminator-feature reconstruction loss")
    p.add_argument("--latent-weight", type=float, default=1.0,
                   help="gan-encoder: weight of the latent loss MSE(E(G(z)), z)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="gan-encoder: start the encoder from this gan-encoder checkpoint's encoder weights")
    p.add_argument("--nproc-per-node", type=int, metavar="N",
                   help="train on N processes on this machine under torchrun (gloo on CPU, NCCL on GPU, "
                        "one GPU per process); --batch-size is the global batch, split over them")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="held-out metrics of a checkpoint (bounds, mode coverage, FD, ...)")
    p.add_argument("checkpoint")
    p.add_argument("-n", type=int, help="samples or held-out images to use (default: the protocol's)")
    p.add_argument("--k", type=int, help="importance samples for the IWAE bound (VAEs)")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", help="write the full result as JSON here")
    p.set_defaults(func=cmd_evaluate)
