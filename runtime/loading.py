"""`load(path)`: which model class, on which backend, for each kind of file.

| file | onnxruntime / openvino | tensorrt | torch |
|---|---|---|---|
| `.onnx` decoder or filter graph | Model over the graph | - | - |
| `.onnx` VQ decoder, or prior + `decoder=` | VQModel over the graphs | - | - |
| `.plan` + sidecar | - | Model over the engine | - |
| checkpoint (vae, gan-encoder, dcgan, ...) | Model, decoder exported in memory, encoder on torch | - | Model |
| checkpoint (vqvae, prior) | VQModel, graphs exported in memory, encoder on torch | - | VQModel |

An `.onnx` never imports torch. Graphs are opened by runtime/graphs.py; what a model offers is
runtime/protocols.py's LoadedModel.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from latentforge.checkpoint import PREFIX as META
from latentforge.checkpoint import ENCODING_KINDS, load_checkpoint, read_info
from latentforge.errors import BackendUnavailable, CheckpointError, InputError, LatentforgeError

from .artifact import check_model_file, from_checkpoint, from_onnx_metadata, image_shape_of, is_onnx
from .backends import NAMES, PRECISIONS, backend_status_or_raise, default_backend, is_plan
from .external_data import check_external_data
from .graphs import GraphDecoder, bf16_hint, open_exported, open_graph, verify_graph
from .model import Model
from .protocols import BackendGraph, LoadedModel
from .vq_model import VQModel, on_graphs

BACKENDS = ("auto", *NAMES)
VQ_PARTS = ("vq_decoder", "prior")   # graphs of code grids, not latent vectors
STEP_IO = (["token", "position", "cache"], ["logits", "kv"])


def _check_threads(threads) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise InputError(f"threads must be a positive integer or None (one per physical core), got {threads!r}")


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
         precision: str = "fp32", decoder: str | os.PathLike | None = None, verify: bool = False) -> LoadedModel:
    """Load a checkpoint (`.safetensors`), an exported `.onnx` (decoder or filter graph) or a TensorRT `.plan`.

    A vqvae or prior checkpoint, or an exported VQ decoder / prior `.onnx`, gives a `VQModel` (code grids).

    backend "auto" runs what `latentforge tune` measured fastest here, per batch size, when a tuning record
    for this file, machine and library versions exists (runtime/tune_record.py; with `precision` left at fp32,
    a record may choose bf16 or int8 that passed its PSNR gate); else the hardware-aware default of
    runtime/backends.py. `model.backend` says what runs and `model.chosen_because` why.
    "onnxruntime"/"openvino" with a checkpoint export its decoder in memory (encode stays on
    torch). `precision` other than fp32 loads the exporter's variant `NAME.<precision>.onnx` beside an
    `.onnx`; on OpenVINO bf16 is an inference hint on the fp32 graph. `threads` defaults to one per
    physical core.
    On the torch backend (a checkpoint) precision "bf16" lets the convolutions run in bfloat16.
    An exported VQ code prior (`--part prior`) samples with its VQ decoder graph: `decoder="decoder.onnx"`.
    verify=True (the server's choice) runs each exported graph's golden input once (latentforge/golden.py) and
    refuses, with a CheckpointError, a file that does not reproduce its golden output within its precision's
    tolerance: a damaged or mismatched graph or engine. A checkpoint needs none: the graphs it is exported to in
    memory are checked against PyTorch as they are made.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    _check_threads(threads)
    path = check_model_file(path)
    if decoder is not None:
        decoder = check_model_file(decoder)
        if not is_onnx(path):
            raise InputError(f"decoder= goes with an exported VQ prior .onnx; {str(path)!r} is not one (a prior "
                             "checkpoint carries its own decoder: load it alone)")
        if not is_onnx(decoder):
            raise InputError(f"decoder= must be the VQ decoder .onnx (made by `latentforge export PRIOR_CKPT --part "
                             f"decoder -o DECODER.onnx`), got {str(decoder)!r}")
    because = f"backend={backend!r} was asked for"
    if backend == "auto":
        plain = precision == "fp32" and decoder is None and not is_plan(path)
        tuned = _load_tuned(path, threads, verify) if plain else None
        if tuned is not None:
            return tuned
        backend, because = default_backend(path, is_onnx(path))
    model = _load_on(path, backend, threads, precision, decoder, verify=verify)
    model.chosen_because = because
    return model


def _load_on(path: Path, backend: str, threads, precision: str, decoder: Path | None = None,
             graph: Path | None = None, verify: bool = False, mode: str = "fused") -> LoadedModel:
    if is_plan(path):
        return _load_plan(path, backend, verify)
    if is_onnx(path):
        return _load_onnx(path, backend, threads, precision, decoder, verify, mode)
    return _load_checkpoint(path, backend, threads, precision, graph, mode, verify)


def _load_tuned(path: Path, threads, verify: bool) -> LoadedModel | None:
    """The tuning record's winners, routed by batch size: the smallest batch size's winner loaded now, each other
    distinct engine on the first call that needs it (once, shared by its batch sizes)."""
    from .tune_record import matching_record

    record = matching_record(path)
    if record is None:
        return None
    loaded = {}

    def engine(w) -> LoadedModel:
        from .ov_cache import beside

        if w.engine not in loaded:
            with beside(record.path):   # OpenVINO winners import what they compiled last time (runtime/ov_cache.py)
                loaded[w.engine] = _load_winner(path, w, record, threads, verify)
        return loaded[w.engine]

    first = record.winners[min(record.winners)]
    model = engine(first)
    if len({w.engine for w in record.winners.values()}) > 1:
        model.route_batches({b: model if w.engine == first.engine else (lambda w=w: engine(w))
                             for b, w in record.winners.items()})
    if record.filter is not None and isinstance(model, Model):
        f = record.filter
        model.filter_choice = (f.backend, f.precision, f.mode, threads, record.filter_path, record.path)
    model.chosen_because = record.because()
    return model


def keep_compiled(path: Path, threads) -> None:
    """Compile each OpenVINO winner of `path`'s record (and its filter's, if OpenVINO) once and keep it beside the
    record (runtime/ov_cache.py), so that `load` imports it instead of compiling; `tune` calls this after writing
    the record, `load` never writes."""
    from .ov_cache import beside
    from .tune_record import matching_record

    record = matching_record(path)
    if record is None:
        return
    openvino = {w.engine: w for w in record.winners.values() if w.backend == "openvino"}
    if record.filter is not None and record.filter.backend == "openvino":
        openvino["filter"] = record.filter
    for engine, w in openvino.items():
        try:
            with beside(record.path, write=True):
                if engine == "filter":
                    model = _load_tuned(path, threads, verify=False)
                    if isinstance(model, Model):
                        model.filter_graph()
                else:
                    _load_winner(path, w, record, threads, verify=False)
        except LatentforgeError as e:   # the record stands; load compiles this winner each time instead
            warnings.warn(f"tuning record {str(record.path)!r}: OpenVINO's compiled {w.label} was not kept ({e})",
                          stacklevel=2)


def _load_winner(path: Path, w, record, threads, verify: bool) -> LoadedModel:
    if w.mode == "nncf":   # the fp32 model, its decoder swapped for the record's int8 IR
        from .machine import installed
        from .ov_int8 import decoder

        # an onnxruntime session opens in a third of the time OpenVINO compiles the fp32 graph it would not run
        base = "onnxruntime" if installed("onnxruntime") else "openvino"
        model = _load_on(path, base, threads, "fp32", graph=record.graph_path, verify=verify, mode="1thread")
        golden = model._decoder.graph.metadata if verify else None
        int8 = decoder(record.int8_path, threads, model.value_range, repr(str(record.int8_path)), golden)
        int8.fallback = model._decoder   # no variant files beside an IR: the NaN guard climbs to this one
        model.swap_decoder(int8)
        return model
    return _load_on(path, w.backend, threads, w.precision, graph=record.graph_path, verify=verify, mode=w.mode)


def _load_onnx(path: Path, backend: str, threads, precision: str, decoder: Path | None = None,
               verify: bool = False, mode: str = "fused") -> LoadedModel:
    if backend not in ("onnxruntime", "openvino"):
        raise BackendUnavailable(f"{str(path)!r}: an .onnx runs on onnxruntime or openvino; load the checkpoint for "
                                 "the torch backend, or the exporter's .plan for tensorrt")
    graph = open_exported(path, backend, threads, precision, mode)
    if verify:
        verify_graph(graph, repr(str(graph.source)))
    meta = graph.metadata
    part = meta.get(META + "part")
    if part in VQ_PARTS:
        return _vq_on_exported_graphs(path, graph, backend, threads, precision, decoder, verify)
    if decoder is not None:
        raise InputError(f"decoder= goes with an exported VQ prior; {str(path)!r} is a {part!r} graph, so load it "
                         "alone")
    info = from_onnx_metadata(meta, path)
    if part == "filter":
        return Model(info, None, filter_graph=graph, precision=graph.precision)
    return Model(info, GraphDecoder(graph, repr(str(graph.source)), info.value_range), precision=graph.precision)


def _load_plan(path: Path, backend: str, verify: bool = False) -> Model:
    if backend != "tensorrt":
        raise BackendUnavailable(f"{str(path)!r} is a TensorRT engine; it runs only on backend='tensorrt'")
    from .trt_backend import TrtGraph, read_engine_sidecar, sidecar_metadata

    sidecar = read_engine_sidecar(path)
    meta = sidecar_metadata(sidecar)
    if meta.get(META + "part") in VQ_PARTS:
        raise BackendUnavailable(f"{str(path)!r} is a VQ {meta[META + 'part']} engine, which the runtime does not load "
                                 "yet; run the exported .onnx on onnxruntime or openvino")
    info = from_onnx_metadata(meta, path)
    precision = sidecar.get("metadata", {}).get("precision", "fp32")
    graph = TrtGraph(path, sidecar)
    if verify:
        verify_graph(graph, repr(str(path)))
    if meta.get(META + "part") == "filter":
        return Model(info, None, filter_graph=graph, precision=precision)
    return Model(info, GraphDecoder(graph, repr(str(path)), info.value_range), precision=precision)


def _load_checkpoint(path: Path, backend: str, threads, precision: str, graph: Path | None = None,
                     mode: str = "fused", verify: bool = False) -> LoadedModel:
    """`graph`: the decoder graph `tune` exported from this very checkpoint (its hash checked), opened instead of
    exporting again; with `verify`, run its golden check, as for any file read back. `mode`: what the torch
    backend runs (runtime/torch_backend.MODES), or how an onnxruntime session is set up (backends.ORT_MODES),
    as `tune` chose it."""
    if backend == "tensorrt":
        raise BackendUnavailable(f"{str(path)!r}: TensorRT runs engines; build one with the exporter and load "
                                 "its .plan")
    checkpoint = read_info(path)  # refuses pickles, truncated and foreign files before torch is imported
    if checkpoint.kind in ("vqvae", "prior"):  # code grids, not latent vectors: their own model class
        return _load_vq_checkpoint(path, backend, threads, precision)
    info = from_checkpoint(checkpoint)
    if backend in ("onnxruntime", "openvino"):
        if precision != "fp32" and not bf16_hint(backend, precision):
            raise InputError(f"a checkpoint on {backend} is exported in memory at fp32; for {precision} export the "
                             f"variant with `latentforge export {path} --precision {precision} -o "
                             f"{path.with_suffix('')}.{precision}.onnx` and load that")
        backend_status_or_raise(backend)  # say it is missing before spending seconds on torch and the export
    from .torch_backend import TorchDecoder, checkpoint_to_onnx_bytes

    if backend == "onnxruntime" and info.point_dim:
        raise BackendUnavailable(f"{str(path)!r} is a point model, which runs on the torch backend only; "
                                 "use backend 'torch' or 'auto'")
    module, checkpoint = load_checkpoint(path)
    if backend in ("onnxruntime", "openvino"):
        label = f"the graph exported from {str(path)!r}"
        source = graph if graph is not None else checkpoint_to_onnx_bytes(module, checkpoint)
        if graph is not None and not isinstance(graph, bytes):   # a file read back, as any .onnx: no external
            check_external_data(graph)                              # data outside its folder
        graph = open_graph(backend, source, threads, label, precision, mode)
        if verify and not isinstance(source, bytes):
            verify_graph(graph, label)
        encoder = TorchDecoder(module, threads) if info.kind in ENCODING_KINDS else None
        return _with_codec(Model(info, GraphDecoder(graph, label, info.value_range), encoder,
                                 precision=graph.precision), module, info, threads)
    # a record's compile winner compiles beside the first calls, which run the plain module meanwhile
    decoder = TorchDecoder(module, threads, precision=precision, value_range=info.value_range, mode=mode,
                           background=True)
    encoder = decoder if info.kind in ENCODING_KINDS else None
    return _with_codec(Model(info, decoder, encoder, precision=precision), module, info, threads)


def _load_vq_checkpoint(path: Path, backend: str, threads: int | None, precision: str) -> VQModel:
    """A vqvae or prior checkpoint on torch, or (its graphs exported in memory) on onnxruntime or OpenVINO."""
    import torch

    from .torch_backend import thread_count

    if precision != "fp32":
        raise InputError(f"a VQ checkpoint runs at fp32; for {precision} export the parts with `latentforge export "
                         f"{path} --part prior|decoder --precision {precision}` and load the .onnx files")
    module, info = load_checkpoint(path)
    vqvae = module.vqvae if info.kind == "prior" else module
    vq = info.config["vqvae"] if info.kind == "prior" else info.config
    facts = {"image_shape": (vq["image_size"], vq["image_size"], vq["channels"]), "value_range": info.value_range,
             "codebook_size": vq["codebook_size"], "code_grid": vq["image_size"] >> vq["downsample"]}
    no_prior = (f"{str(path)!r} is a VQ-VAE without a prior, so it cannot sample; train one with "
                f"`latentforge train prior {path}` and load that checkpoint")

    def encode(x: np.ndarray) -> np.ndarray:
        with thread_count(threads), torch.inference_mode():
            return vqvae.encode(torch.from_numpy(x)).numpy()

    if backend in ("onnxruntime", "openvino"):
        from latentforge.export.vq import vq_graphs
        from latentforge.models.prior import PriorStep

        graphs = {part: open_graph(backend, data, threads, f"the {part} graph of {str(path)!r}")
                  for part, data in vq_graphs(module, info).items()}
        cache_shape = tuple(PriorStep(module.transformer).empty_cache(1).shape[1:]) if info.kind == "prior" else ()
        return _with_codec(on_graphs(path, info.kind, backend, facts, graphs["decoder"], graphs.get("prior"),
                                     cache_shape, encode, no_prior), module, info, threads)

    def decode(codes: np.ndarray) -> np.ndarray:
        with thread_count(threads), torch.inference_mode():
            return vqvae.decode(torch.from_numpy(codes)).numpy()

    def logits():
        from latentforge.models.prior import CachedLogits

        cached = CachedLogits.numpy(module.transformer)

        def run(tokens: np.ndarray) -> np.ndarray:
            with thread_count(threads):
                return cached(tokens)

        return run

    return _with_codec(VQModel(path, info.kind, "torch", facts, decode, logits if info.kind == "prior" else None,
                               encode, threads or torch.get_num_threads(), no_prior=no_prior), module, info, threads)


def _with_codec(model, module, info, threads: int | None):
    """A prior checkpoint's model, or a VAE's with codec tables beside it, compresses (runtime/codec.py); its
    codec is built on first use."""
    from .codec import latent_codec, vq_codec
    from .codec_latent import read_tables, tables_path

    if info.kind == "prior":
        model.codec_points = (1,)
        model.codec_factory = lambda point: vq_codec(model, module, threads)
    elif info.kind == "vae" and tables_path(model.path).is_file():
        model.codec_points = tuple(1 + q for q in sorted(read_tables(tables_path(model.path))))
        model.codec_factory = lambda point: latent_codec(model, point)
    return model


def _vq_graph_facts(meta: dict[str, str], path: Path) -> dict:
    """The VQ facts an exported graph's metadata_props carry (latentforge.export.vq.vq_metadata)."""
    try:
        grid = [int(v) for v in json.loads(meta[META + "code_grid"])]
        facts = {"image_shape": image_shape_of(meta), "codebook_size": int(meta[META + "codebook_size"]),
                 "value_range": tuple(float(v) for v in json.loads(meta[META + "value_range"])), "code_grid": grid[0]}
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{str(path)!r} has missing or malformed latentforge VQ metadata ({e}); "
                              "re-export it with `latentforge export`") from None
    return facts


def _vq_on_exported_graphs(path: Path, graph: BackendGraph, backend: str, threads: int | None, precision: str,
                           decoder_path: Path | None, verify: bool = False) -> VQModel:
    """An exported VQ decoder (`codes` -> `image`), or a prior's step graph ((token, position, cache) -> (logits,
    kv)) with its decoder beside it, opened on the same backend at the same precision.

    A prior and a decoder exported from different VQ-VAEs are refused (their vqvae_sha256 differ).
    """
    meta, part = graph.metadata, graph.metadata.get(META + "part")
    facts = _vq_graph_facts(meta, path)
    cache_shape = ()
    if part == "vq_decoder":
        if decoder_path is not None:
            raise InputError(f"{str(path)!r} is itself a VQ decoder; `decoder=` goes with a prior graph")
        decoder, prior = graph, None
    else:
        if decoder_path is None:
            raise InputError(f"{str(path)!r} is a code prior, which draws codes but not images: also give its VQ "
                             "decoder, `load(PRIOR_ONNX, decoder=DECODER_ONNX)` (`latentforge sample PRIOR_ONNX "
                             "--decoder DECODER_ONNX`), made by `latentforge export PRIOR_CKPT --part decoder`")
        decoder, prior = open_exported(decoder_path, backend, threads, precision), graph
        if verify:
            verify_graph(decoder, repr(str(decoder.source)))
        dmeta = decoder.metadata
        if dmeta.get(META + "part") != "vq_decoder":
            raise InputError(f"decoder {str(decoder_path)!r} is not a VQ decoder graph (latentforge.part="
                             f"{dmeta.get(META + 'part')!r}); export one with `--part decoder` from the prior "
                             "checkpoint")
        ours, theirs = meta.get(META + "vqvae_sha256"), dmeta.get(META + "vqvae_sha256")
        if _vq_graph_facts(dmeta, decoder_path) != facts or ours != theirs:
            raise CheckpointError(f"prior {str(path)!r} and decoder {str(decoder_path)!r} do not come from the same "
                                  "VQ-VAE (their latentforge.vqvae_sha256 differ); export both from one prior "
                                  "checkpoint with this version of latentforge")
        if (prior.input_names, prior.output_names) != STEP_IO:
            raise CheckpointError(f"{str(path)!r} has inputs {prior.input_names} and outputs {prior.output_names}, "
                                  f"expected {STEP_IO[0]} -> {STEP_IO[1]}; re-export it with `latentforge export`")
        try:
            cache_shape = tuple(int(v) for v in json.loads(meta[META + "prior_cache"]))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{str(path)!r} lacks a usable latentforge.prior_cache ({e}); re-export it with "
                                  "`latentforge export`") from None
    if decoder.input_names != ["codes"] or decoder.output_names != ["image"]:
        raise CheckpointError(f"the VQ decoder has inputs {decoder.input_names} and outputs {decoder.output_names}, "
                              "expected ['codes'] -> ['image']; re-export it with `latentforge export`")
    no_prior = (f"{str(path)!r} is a VQ decoder: it decodes code grids (decode_codes) but draws none; to sample, "
                "load the prior graph with it, `load(PRIOR_ONNX, decoder=...)`")
    return on_graphs(path, "prior" if prior is not None else "vqvae", backend, facts, decoder, prior, cache_shape,
                     no_prior=no_prior)
