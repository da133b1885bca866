"""`latentforge tune`: measure every engine here for one model and record the fastest correct one per batch."""
from __future__ import annotations

from .arguments import add_model, add_threads, batch_sizes


def cmd_tune(args) -> None:
    from latentforge.runtime.machine import hardware
    from latentforge.runtime.tune import tune

    facts = hardware()
    print(f"machine: {facts.summary()}")
    record, where = tune(args.model, batches=args.batch, min_psnr=args.min_psnr, seconds=args.seconds,
                         threads=args.threads, facts=facts, compile=not args.no_compile)
    for label, why in record.rejected.items():
        print(f"left out {label}: {why}")
    for batch, timings in sorted(record.timings.items(), key=lambda kv: (isinstance(kv[0], str), str(kv[0]))):
        row = ", ".join(f"{label} {ms:.3g} ms" for label, ms in sorted(timings.items(), key=lambda kv: kv[1]))
        print(f"batch {batch}: {row}")
    for batch, w in sorted(record.winners.items()):
        print(f"winner at batch {batch}: {w.label} ({w.p50_ms:.3g} ms p50, PSNR {w.psnr_db:.1f} dB)")
    if record.filter is not None:
        f = record.filter
        print(f"filter (one frame per call): {f.label} ({f.p50_ms:.3g} ms p50, PSNR {f.psnr_db:.1f} dB)")
    print(f"tuned in {record.seconds:.1f} s; record written to {where}; `latentforge.load(MODEL)` now uses it")


def add_commands(sub) -> None:
    p = sub.add_parser("tune", help="time every engine for MODEL here and record the fastest correct one")
    add_model(p)
    p.add_argument("--batch", type=batch_sizes, default=(1, 16, 128), metavar="B,B,...",
                   help="the batch sizes to tune for, one winner each (default 1,16,128)")
    p.add_argument("--min-psnr", type=float, default=40.0, metavar="DB",
                   help="a candidate must reach this PSNR against fp32 on fresh latents (default 40)")
    p.add_argument("--seconds", type=float, default=20.0, metavar="S",
                   help="timing budget shared by all candidates and batch sizes (default 20; loading is extra)")
    p.add_argument("--no-compile", action="store_true",
                   help="leave torch.compile out (it compiles for tens of seconds per batch size on a small CPU)")
    add_threads(p, "threads per engine (default: one per physical core)")
    p.set_defaults(func=cmd_tune)
