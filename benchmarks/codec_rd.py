"""Rate-distortion of latentforge's codec against JPEG, WebP and AVIF (Pillow), on held-out faces and on photo tiles.

    python benchmarks/codec_rd.py [--n 64] [--extra NAME=CKPT ...] [--merge] [--out benchmarks/results]

Rates are bits per pixel of the actual files: one .lfz (header included) or one JPEG/WebP/AVIF file per image,
averaged. Quality: PSNR (mean over images of the per-image PSNR), MS-SSIM (torchmetrics; 3 scales, 7-px
Gaussian: 64 px images are too small for the usual 5 scales of 11 px) and a feature distance (L2 between
the shipped faces readout network's features of the original and of the decoded image, over the mean
feature norm of the originals). BD-rate (Bjøntegaard, training/evaluate/bdrate.py) on PSNR, of the Pareto
points of our operating points against each codec's sweep. The decoded .lfz images are checked to be the
model's own reconstruction, bit for bit.

Data: `faces` test split (held out from training), and `photos`: 64x64 tiles cut from matplotlib's sample
photograph grace_hopper.jpg (at full and half resolution), a folder of images a user could bring.
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

PIL_SWEEPS = {"JPEG": [5, 10, 20, 30, 50, 70, 85, 95], "WEBP": [0, 5, 10, 20, 40, 60, 80, 95],
              "AVIF": [0, 10, 25, 40, 60, 80, 95]}


def photo_tiles(n: int) -> np.ndarray:
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB")
    tiles = []
    for scale in (1, 2):
        a = np.asarray(image.resize((image.width // scale, image.height // scale), Image.Resampling.LANCZOS))
        tiles += [a[y:y + 64, x:x + 64] for y in range(0, a.shape[0] - 63, 64) for x in range(0, a.shape[1] - 63, 64)]
    pick = np.random.default_rng(0).permutation(len(tiles))[:n]
    return np.stack([tiles[i] for i in sorted(pick)])


def pil_codec(images: np.ndarray, fmt: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    sizes, out = [], []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt, quality=quality)
        sizes.append(buffer.tell())
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return np.array(sizes), np.stack(out)


def ours(model, point: int, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from latentforge.runtime.codec import codec_of, compress, decompress

    sizes = np.array([len(compress(model, images[i:i + 1], point=point)) for i in range(len(images))])
    decoded = decompress(compress(model, images, point=point), model)
    codec = codec_of(model, point)
    assert np.array_equal(decoded, codec.synthesize(codec.analyse(images))), "decompress is not the reconstruction"
    return sizes, decoded


def metrics(images: np.ndarray, decoded: np.ndarray, sizes: np.ndarray, features) -> dict:
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    mse = ((images.astype(np.float64) - decoded) ** 2).reshape(len(images), -1).mean(1)
    x, y = (torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255 for a in (images, decoded))
    ms = msssim(y, x, data_range=1.0, kernel_size=7, betas=(0.0448, 0.2856, 0.3001), normalize="relu")
    f0, f1 = features(images), features(decoded)
    return {"bpp": float(np.mean(sizes) * 8 / (images.shape[1] * images.shape[2])),
            "psnr": float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10)))),
            "ms_ssim": float(ms), "feature_distance": float(np.linalg.norm(f0 - f1, axis=1).mean()
                                                            / np.linalg.norm(f0, axis=1).mean())}


def run(args) -> tuple[list[str], dict]:
    import torch
    from PIL import features as pil_features

    from latentforge.errors import InputError
    from latentforge.runtime.codec import SHIPPED, load_codec_model
    from latentforge.training.data import open_data
    from latentforge.training.evaluate.bdrate import bd_rate, pareto
    from latentforge.training.evaluate.readout import readout_for

    torch.set_num_threads(1)
    faces = open_data("faces")
    readout, _ = readout_for(faces)
    sets = {"faces": faces.get("test", np.arange(args.n))[0], "photos": photo_tiles(args.n)}
    formats = [f for f in PIL_SWEEPS if f != "AVIF" or pil_features.check("avif")]
    rows, report = [], {"n": args.n, "sets": {}}
    earlier = {}
    if args.merge and (args.out / "codec-rd.json").is_file():   # keep the rows measured before
        earlier = json.loads((args.out / "codec-rd.json").read_text())["sets"]
    for name, images in sets.items():
        results = dict(earlier.get(name, {}).get("results", {}))

        def measure(key, run, images=images, results=results, name=name):
            if key not in results:
                start = time.perf_counter()
                sizes, decoded = run()
                results[key] = metrics(images, decoded, sizes, readout.features)
                print(f"{name} {key}: {results[key]} ({time.perf_counter() - start:.0f} s)", flush=True)

        for q in sorted(SHIPPED):
            measure(f"latentforge q{q}", lambda q=q, images=images: ours(
                *load_codec_model("faces", "onnxruntime", 1, quality=q), images))
        for label, path in (e.split("=", 1) for e in args.extra):
            measure(f"latentforge {label}", lambda path=path, images=images: ours(
                *load_codec_model(path, "onnxruntime", 1), images))
        for fmt in formats:
            for q in PIL_SWEEPS[fmt]:
                measure(f"{fmt} q{q}", lambda fmt=fmt, q=q, images=images: pil_codec(images, fmt, q))
        mine = [v for k, v in results.items() if k.startswith("latentforge")]
        hull = pareto([v["bpp"] for v in mine], [v["psnr"] for v in mine])
        bd = {}
        for fmt in formats:
            theirs = [v for k, v in results.items() if k.startswith(fmt + " ")]
            try:
                bd[fmt] = bd_rate([v["bpp"] for v in theirs], [v["psnr"] for v in theirs], *hull)
            except InputError as e:   # too few points or no overlap: say so in the table
                bd[fmt] = str(e)
        report["sets"][name] = {"results": results, "bd_rate_psnr": bd, "pareto": [list(hull[0]), list(hull[1])]}
        rows += [f"## {name} ({args.n} images, 64x64)", "", "| codec | bpp | PSNR dB | MS-SSIM | feature dist. |",
                 "|---|---|---|---|---|"]
        rows += [f"| {k} | {v['bpp']:.3f} | {v['psnr']:.2f} | {v['ms_ssim']:.4f} | {v['feature_distance']:.3f} |"
                 for k, v in results.items()]
        points = ", ".join(f"{r:.3f} bpp / {q:.2f} dB" for r, q in zip(*hull))
        rows += ["", f"BD-rate on PSNR of latentforge's Pareto points ({points}):", ""]
        rows += [f"- vs {fmt}: " + (f"{100 * v:+.1f} %" if isinstance(v, float) else v) for fmt, v in bd.items()]
        rows.append("")
    plot(report, args.out / "codec-rd.png")
    return rows, report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(report["sets"]), figsize=(6 * len(report["sets"]), 8.5), squeeze=False)
    for col, (name, data) in enumerate(report["sets"].items()):
        groups: dict[str, list] = {}
        for key, v in data["results"].items():
            fam = "latentforge" if key.startswith("latentforge") else key.split()[0]
            groups.setdefault(fam, []).append(v)
        for row, metric in enumerate(("psnr", "ms_ssim")):
            ax = axes[row, col]
            for fam, values in groups.items():
                values = sorted(values, key=lambda v: v["bpp"])
                style = {"marker": "o", "lw": 2.5, "color": "C3"} if fam == "latentforge" else {"marker": ".", "lw": 1.2}
                ax.plot([v["bpp"] for v in values], [v[metric] for v in values], label=fam, **style)
            ax.set_xscale("log")
            ax.set_xlabel("bits per pixel (whole files, headers included)")
            ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "MS-SSIM (3 scales)")
            ax.set_title(f"{name}: {metric.replace('_', '-').upper()}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from latentforge.files import write_report
    from latentforge.runtime.machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--extra", action="append", default=[], help="NAME=CKPT: another codec model to measure")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--merge", action="store_true", help="keep the rows of an earlier codec-rd.json there")
    args = parser.parse_args()
    rows, report = run(args)
    info = machine_info()
    report["machine"] = info
    write_report(args.out, "codec-rd", ["# latentforge codec: rate-distortion", "", *rows], report,
                 f"{info.get('cpu', '')}, {info.get('physical_cores')} cores, load {info.get('load_average_1min')}")


if __name__ == "__main__":
    main()
