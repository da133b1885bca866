"""`latentforge bench`: latency and throughput of every backend beside its peers."""
from __future__ import annotations

import json

from .arguments import add_model, add_threads, batch_sizes


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


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="latency and throughput of every backend beside its peers")
    add_model(p)
    p.add_argument("--batch", type=batch_sizes, default=(1, 16, 128), metavar="B,B,...",
                   help="the batch sizes to time, one row each (default 1,16,128)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed repeats per row")
    add_threads(p, "threads for latentforge's backends (peers keep their defaults)")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (it compiles for ~20 s)")
    p.add_argument("--json", help="write the report as JSON here")
    p.set_defaults(func=cmd_bench)
