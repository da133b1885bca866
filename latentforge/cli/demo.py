"""`latentforge demo`: sample, walk, edit, export and benchmark the built-in faces VAE."""
from __future__ import annotations


def cmd_demo(args) -> None:
    from latentforge.demo import run_demo

    run_demo(out=args.out, train=args.train, steps=args.steps, bench=not args.no_bench)


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="sample, walk, edit, export and benchmark the built-in faces VAE")
    p.add_argument("--out", default="demo_out", help="output folder (created)")
    p.add_argument("--train", action="store_true", help="train a fresh model instead of the shipped weights")
    p.add_argument("--steps", type=int, default=1500, help="training steps with --train")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark table")
    p.set_defaults(func=cmd_demo)
