"""What this machine can run: `latentforge backends` and `latentforge build-ops`."""
from __future__ import annotations


def cmd_backends(args) -> None:
    from latentforge import backends

    for status in backends():
        print(status.line())


def cmd_build_ops(args) -> None:
    from latentforge.ops_build import build

    info = build(verbose=args.verbose)  # BackendUnavailable carries the one-line reason to the CLI
    kernels = "CPU and CUDA" if info.cuda else "CPU"
    if info.cached:
        print(f"latentforge ops ({kernels}) already built: {info.path} (loaded in {info.seconds:.2f} s)")
    else:
        print(f"built latentforge ops ({kernels}) in {info.seconds:.1f} s: {info.path}")


def add_commands(sub) -> None:
    p = sub.add_parser("backends", help="list the runtime backends, available or not and why")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("build-ops", help="compile the fused C++/CUDA ops now instead of on first use")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    p.set_defaults(func=cmd_build_ops)
