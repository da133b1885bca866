"""`latentforge build-ops`: compile the fused ops' native library ahead of time (else it builds on first use)."""
from __future__ import annotations


def cmd_build_ops(args) -> None:
    from .ops_build import build

    info = build(verbose=args.verbose)  # BackendUnavailable carries the one-line reason to the CLI
    kernels = "CPU and CUDA" if info.cuda else "CPU"
    if info.cached:
        print(f"latentforge ops ({kernels}) already built: {info.path} (loaded in {info.seconds:.2f} s)")
    else:
        print(f"built latentforge ops ({kernels}) in {info.seconds:.1f} s: {info.path}")


def add_commands(sub) -> None:
    p = sub.add_parser("build-ops", help="compile the fused C++/CUDA ops now instead of on first use")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    p.set_defaults(func=cmd_build_ops)
