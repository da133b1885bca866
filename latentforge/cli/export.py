"""`latentforge export`: a checkpoint or foreign generator -> ONNX / TensorRT plan / Triton model folder."""
from __future__ import annotations

import argparse
import json

from .arguments import add_precision, alias, batch_sizes


def _floats(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LO,HI like -1,1, got {text!r}") from None
    return lo, hi


def _batch_profile(text: str) -> tuple[int, int, int]:
    """MIN,OPT,MAX of TensorRT's optimization profile, or one size for all three."""
    values = batch_sizes(text)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--batch is MIN,OPT,MAX (or one size), got {text!r}")
    return values


def cmd_export(args) -> None:
    from latentforge.errors import InputError, LatentforgeError
    from latentforge.export.foreign import dcgan_examples_source, foreign_source, parse_shape
    from latentforge.export.parity import table
    from latentforge.export.pipeline import ExportOptions, export
    from latentforge.files import atomic_write_bytes, check_output_path

    if args.report:
        check_output_path(args.report)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if args.module:
        weights = args.weights or args.model
        if not weights:
            raise InputError("--module needs --weights FILE (.pt, .pth or .safetensors)")
        source = foreign_source(args.module, weights, args.init_args, shape, args.value_range)
    elif args.arch == "dcgan-examples":
        weights = args.weights or args.model
        if not weights:
            raise InputError("--arch dcgan-examples needs the netG.pth file")
        source = dcgan_examples_source(weights, args.value_range)
    elif args.model:
        source = args.model
    else:
        raise InputError("give a checkpoint, or --module pkg.mod:Class --weights FILE, or --arch dcgan-examples FILE")
    options = ExportOptions(part=args.part, precision=args.precision, format=args.format, opset=args.opset,
                            batch=args.batch, atol=args.atol, rtol=args.rtol, min_psnr=args.min_psnr,
                            slim=not args.no_slim, triton_backend=args.triton_backend, fp16_io=args.fp16_io)
    try:
        result = export(source, args.output, options, timing_cache=args.timing_cache)
    except LatentforgeError as e:
        failed = getattr(e, "result", None)
        if failed is not None:
            print(table(failed.parity))
            if args.report:
                atomic_write_bytes(args.report, json.dumps(failed.report(), indent=2).encode())
        raise
    print(table(result.parity))
    details = result.details
    if "ops_before_slim" in details:
        print(f"onnxslim: {sum(details['ops_before_slim'].values())} -> {sum(details['ops_after_slim'].values())} ops")
    if details.get("fp32_kept_nodes"):
        print(f"kept in fp32 (activations beyond the fp16 range): {', '.join(details['fp32_kept_nodes'])}")
    if args.report:
        atomic_write_bytes(args.report, json.dumps(result.report(), indent=2).encode())
    print(f"wrote {result.path} ({details['size_bytes']} bytes, {args.part}, {args.precision}, {args.format})")


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="export a model part at a precision to ONNX, TensorRT or a Triton folder, "
                                      "checked against PyTorch")
    p.add_argument("model", nargs="?", help="checkpoint (.safetensors); with --arch/--module, the weights file")
    p.add_argument("-o", "--output", required=True, help="OUT.onnx | OUT.plan | a new Triton model folder")
    p.add_argument("--part", default="decoder", choices=["decoder", "encoder", "filter", "prior"])
    alias(p, "--dtype", add_precision(p, "of the exported graph; below fp32 it is gated against fp32 (--min-psnr)"))
    p.add_argument("--format", default="onnx", choices=["onnx", "tensorrt", "triton"])
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--batch", type=_batch_profile, default=(1, 16, 128), metavar="MIN,OPT,MAX",
                   help="MIN,OPT,MAX: TensorRT's profile; MAX is Triton's max_batch_size")
    p.add_argument("--atol", type=float, help="absolute tolerance (default: per precision)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default: per precision)")
    p.add_argument("--min-psnr", type=float, help="quality gate in dB (default fp16 40, bf16 35, int8 30)")
    p.add_argument("--report", help="write the parity report as JSON here")
    p.add_argument("--no-slim", action="store_true", help="skip the onnxslim clean-up")
    p.add_argument("--fp16-io", action="store_true", help="with --precision fp16: float inputs/outputs in fp16 too")
    p.add_argument("--triton-backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"],
                   help="what --format triton packages")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (default under ~/.cache/latentforge)")
    p.add_argument("--module", help="a foreign generator: pkg.mod:Class (importable)")
    p.add_argument("--init-args", help="JSON keyword arguments for --module's class")
    p.add_argument("--weights", help="weights for --module / --arch (.pt/.pth via weights_only, .safetensors)")
    p.add_argument("--arch", choices=["dcgan-examples"], help="a known foreign architecture (pytorch/examples netG)")
    p.add_argument("--input-shape", help="latent shape per sample when the first layer does not tell, e.g. 100,1,1")
    p.add_argument("--value-range", type=_floats, default=(-1.0, 1.0), help="foreign output range LO,HI")
    p.set_defaults(func=cmd_export)
