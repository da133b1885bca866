"""The training loop for VAEs and DCGANs: deterministic steps, atomic checkpoints, exact resume, a log and plots.

Every random draw of step t comes from (seed, t): the batch indices from NumPy's
PCG64([seed, t]) and the torch noise (eps or z) from a torch.Generator seeded with
seed * 1_000_003 + t. The model is initialized once from torch.manual_seed(seed). So a
run is a function of its weights, optimizer state and step, and resuming from a
checkpoint gives, on CPU, the same weights bit for bit as never stopping.
Under torchrun, each rank takes its slice of that same global batch and noise, and the
gradients are averaged over the ranks (distributed.py), so the world size may change
between a run and its resume.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from latentforge.checkpoint import read_info
from latentforge.errors import InputError, TrainingError

from . import distributed, losses
from .data import data_fields, open_data
from .ema import GeneratorAverage
from .plots import plot_curves
from .recipes import RECIPES, NonFinite
from .samples import save_samples
from .runlog import event, log, start_or_resume
from .state import save_state

KINDS = tuple(RECIPES)
# model fields set by TrainConfig or the data, not model_options
OWN_FLAGS = ("image_size", "channels", "latent_dim", "point_dim")
EVAL_STREAM = 0  # training steps are 1..steps, so noise stream 0 is free for the fixed held-out evaluation
FALLBACKS = {"steps": 2000, "batch_size": 64, "gp_lambda": 10.0, "unroll": 5, "lr_decay_start": 0.5,
             "g_ema": 0.0, "r1": 0.0}
GAN_KINDS = ("dcgan", "gan", "wgan-gp", "unrolled-gan")   # the kinds with a generator/discriminator pair
STUCK_LOSS = 1e-3  # a mean discriminator loss below this over a log window: D has won, G's gradient vanished


@dataclass
class TrainConfig:
    kind: str                       # a key of RECIPES: "vae" | "dcgan" | "gan" | "wgan-gp" | "unrolled-gan" | "vqvae" | "prior"
                                    # | "gan-encoder"
    data: str = "faces"             # spec for open_data
    out: str = "runs/vae"           # RUN_DIR
    steps: int | None = None        # None -> the recipe's default for the data (GANs on ring/grid), else 2000
    batch_size: int | None = None   # None -> likewise, else 64
    image_size: int | None = None   # None -> the data set's own size
    latent_dim: int | None = None   # None -> the model default (vae 32, dcgan 100)
    beta: float = 1.0               # VAE KL weight
    kl_warmup: int = 0              # VAE: ramp the KL weight linearly from 0 to beta over this many steps
    source: str | None = None       # prior: the VQ-VAE checkpoint whose codes it models; gan-encoder: the GAN it inverts
    lr: float | None = None         # None -> the recipe's: 1e-3 (vae), 2e-4 (dcgan), ...
    seed: int = 0
    labels: str | None = None
    model_options: dict = field(default_factory=dict)  # other VAEConfig / DCGANConfig fields
    sample_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 50
    eval_batches: int = 8           # held-out VAE batches per evaluation; 0 turns evaluation off
    resume: bool = False
    progress: bool = True
    command: str = ""               # stored in the checkpoint metadata as `command`
    device: str = "auto"            # "auto" -> cuda when available, else cpu
    critic_steps: int | None = None # GAN kinds: D/critic updates per G update (None -> wgan-gp 5, others 1)
    gp_lambda: float | None = None  # wgan-gp: gradient penalty weight (None -> the recipe's for the data, else 10)
    unroll: int | None = None       # unrolled-gan: differentiable D steps G looks ahead through (else 5)
    lr_decay_start: float | None = None  # GANs, priors: lr decays linearly to 0 from this fraction of the steps
                                         # (1: never; else 0.5)
    feature_weight: float = 1.0     # gan-encoder: weight of the discriminator-feature reconstruction loss
    latent_weight: float = 1.0      # gan-encoder: weight of the latent loss MSE(E(G(z)), z)
    init_from: str | None = None    # gan-encoder: start from this gan-encoder checkpoint's encoder weights
    d_lr: float | None = None       # GAN kinds: the discriminator's own lr (TTUR); None -> lr
    gan_loss: str = "ns"            # gan: "ns" (non-saturating) or "hinge"
    g_ema: float | None = None      # GAN kinds: decay of the generator average the checkpoint holds (0: none)
    r1: float | None = None         # gan, unrolled-gan: weight gamma of D's R1 penalty on real samples (0: none)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.model_options, dict):
            raise InputError(f"model_options must be a dict, got {self.model_options!r}")
        self._fill_defaults()
        for name in ("steps", "batch_size", "sample_every", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.eval_batches, int) or self.eval_batches < 0:
            raise InputError(f"eval_batches must be an integer >= 0, got {self.eval_batches!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise InputError(f"seed must be an integer in 0..2**32-1, got {self.seed!r}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise InputError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if not isinstance(self.kl_warmup, int) or isinstance(self.kl_warmup, bool) or self.kl_warmup < 0:
            raise InputError(f"kl_warmup must be an integer >= 0 (steps), got {self.kl_warmup!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name in ("image_size", "latent_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise InputError(f"{name} must be a positive integer or None, got {value!r}")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.critic_steps is not None and (not isinstance(self.critic_steps, int) or self.critic_steps < 1):
            raise InputError(f"critic_steps must be a positive integer or None, got {self.critic_steps!r}")
        if not (isinstance(self.gp_lambda, (int, float)) and math.isfinite(self.gp_lambda) and self.gp_lambda >= 0):
            raise InputError(f"gp_lambda must be a finite number >= 0, got {self.gp_lambda!r}")
        if not (isinstance(self.lr_decay_start, (int, float)) and 0 <= self.lr_decay_start <= 1):
            raise InputError(f"lr_decay_start must be a number in 0..1, got {self.lr_decay_start!r}")
        if not isinstance(self.unroll, int) or isinstance(self.unroll, bool) or not 0 <= self.unroll <= 100:
            raise InputError(f"unroll must be an integer in 0..100, got {self.unroll!r}")
        self._check_gan_options()
        if RECIPES[self.kind].configure is None:  # a recipe's own configure runs when its source is read
            # checks model_options' names and values (and that the kind can train on this data) now, not mid-run
            self.model_config(data_fields(self.data, self.image_size))

    def _check_gan_options(self) -> None:
        from .recipes.gans import GAN_LOSS_KINDS, R1_KINDS

        pair = self.kind in GAN_KINDS
        if self.d_lr is not None and not (isinstance(self.d_lr, (int, float)) and math.isfinite(self.d_lr)
                                          and self.d_lr > 0 and pair):
            raise InputError(f"d_lr must be a finite number > 0 for a GAN kind ({', '.join(GAN_KINDS)}), got "
                             f"{self.d_lr!r} for {self.kind}")
        if self.gan_loss not in ("ns", "hinge") or (self.gan_loss != "ns" and self.kind not in GAN_LOSS_KINDS):
            raise InputError(f"gan_loss must be 'ns' or 'hinge' (hinge for {', '.join(GAN_LOSS_KINDS)} only), got "
                             f"{self.gan_loss!r} for {self.kind}")
        if not (isinstance(self.g_ema, (int, float)) and 0 <= self.g_ema < 1) or (self.g_ema and not pair):
            raise InputError(f"g_ema must be a number in [0, 1) (0: off; e.g. 0.999), for a GAN kind only, got "
                             f"{self.g_ema!r} for {self.kind}")
        if not (isinstance(self.r1, (int, float)) and not isinstance(self.r1, bool) and math.isfinite(self.r1)
                and self.r1 >= 0) or (self.r1 and self.kind not in R1_KINDS):
            raise InputError(f"r1 must be a finite number >= 0 (0: off; e.g. 0.1), for {', '.join(R1_KINDS)} only, "
                             f"got {self.r1!r} for {self.kind}")

    def _fill_defaults(self) -> None:
        """Fields left None take the recipe's default for this data (recipes/gans.py: ring and grid), then
        FALLBACKS; model options the user did not give take the recipe's too. The filled values are what the
        checkpoint's `train` metadata records."""
        for name, value in self.recipe_defaults().items():
            if name == "model_options":
                self.model_options = {**value, **self.model_options}
            elif getattr(self, name) is None:
                setattr(self, name, value)
        for name, value in FALLBACKS.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def recipe_defaults(self) -> dict:
        """The settings this kind defaults to on this data (empty where the general defaults apply)."""
        return RECIPES[self.kind].defaults(self.data)

    def model_config(self, fixed: dict):
        """The model config this run trains, for data that fixes the fields `fixed` ({image_size, channels} or
        {point_dim})."""
        from latentforge.models import MODELS

        if RECIPES[self.kind].configure is not None:
            return RECIPES[self.kind].configure(self, fixed["image_size"], fixed["channels"])
        config_cls = MODELS[self.kind][1]
        missing = sorted(set(fixed) - set(config_cls.__dataclass_fields__))
        if missing:
            points = [k for k, r in RECIPES.items() if "point_dim" in MODELS[k][1].__dataclass_fields__]
            if "point_dim" in missing:
                raise InputError(f"{self.kind} cannot train on {self.data!r}, which is 2-D point data; "
                                 f"use one of {', '.join(points)}")
            raise InputError(f"{self.kind} cannot train on {self.data!r}: its model has no {missing} field(s)")
        known = set(config_cls.__dataclass_fields__) - set(OWN_FLAGS)
        bad = sorted(set(self.model_options) & set(OWN_FLAGS))
        if bad:
            raise InputError(f"model_options may not set {bad}: image_size and latent_dim have their own options "
                             "and channels come from the data set")
        unknown = sorted(set(self.model_options) - known)
        if unknown:
            raise InputError(f"model_options has unknown field(s) {unknown} for {self.kind}; known: {sorted(known)}")
        fields = dict(self.model_options, **fixed)
        if self.latent_dim is not None:
            fields["latent_dim"] = self.latent_dim
        return config_cls(**fields)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        default = RECIPES[self.kind].lr
        return default(self) if callable(default) else default


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    metrics: dict      # the last logged training metrics and held-out metrics
    seconds: float     # wall time of this call


def train(cfg: TrainConfig, data=None) -> TrainResult:
    """Train `cfg.kind` on `cfg.data` (or on an already-open ImageData `data`) into cfg.out."""
    started = time.perf_counter()
    run_dir = Path(cfg.out)
    ckpt, log_path = run_dir / "checkpoint.safetensors", run_dir / "log.jsonl"
    if ckpt.exists() and not cfg.resume:
        raise InputError(f"RUN_DIR {str(run_dir)!r} has a checkpoint at step {read_info(ckpt).step}; "
                         "pass --resume to continue or choose a new --out")
    world = distributed.world_from_env()
    distributed.check_can_split(cfg.kind, cfg.batch_size, world)
    data = _open_data(cfg, data)
    device = distributed.device_for(world, cfg.device)
    model = _build_model(cfg, cfg.model_config(_data_fields(data))).to(device).train()
    if world.leader:  # only once the data and the model are known to be good: bad input leaves no folder
        _make_run_dir(run_dir)
    else:
        log_path = None  # one writer: rank 0
    optimizers = _optimizers(cfg, model)
    identity = _run_identity(cfg, model, data)
    ema = GeneratorAverage(model.generator, cfg.g_ema) if cfg.g_ema else None
    step, wall_offset, records = start_or_resume(cfg, ckpt, log_path, model, optimizers, identity, device, ema)
    if step >= cfg.steps:
        records.append(event(log_path, step, wall_offset, f"at step {step} >= steps {cfg.steps}; nothing to train"))
        return TrainResult(ckpt, step, {}, time.perf_counter() - started)
    joined = distributed.join(world, device)
    distributed.average_gradients(optimizers, world)

    held_out_batches = _eval_batches(cfg, data)
    recipe = RECIPES[cfg.kind]
    alerts: dict[str, str] = {}   # collapse warnings, kept in the progress bar once raised
    saved_step = step if ckpt.exists() else None
    window: dict[str, list[float]] = {}
    last: dict = {}
    bar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and world.leader),
               desc=f"{cfg.kind} {data.name}", unit="step", dynamic_ncols=True, file=sys.stderr)
    try:
        while step < cfg.steps:
            step += 1
            rng = np.random.Generator(np.random.PCG64([cfg.seed, step]))
            count = cfg.batch_size * recipe.real_batches(cfg)
            mine = distributed.my_slice(rng.choice(data.size("train"), count, replace=False),
                                        recipe.real_batches(cfg), world)
            images, _ = data.get("train", mine)
            x = _to_model_range(images, model.config.value_range, device)
            try:
                noise = distributed.RankNoise(_noise_seed(cfg.seed, step), world)
                metrics = distributed.average_metrics(recipe.step(cfg, model, optimizers, x, noise), world)
            except NonFinite as e:
                raise TrainingError(f"{e} at step {step}; {_bad_loss_hint(cfg, saved_step, ckpt)}") from None
            if ema is not None:
                ema.update(model.generator, step)
            for k, v in metrics.items():
                window.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix({**{k: f"{v:.4g}" for k, v in metrics.items()}, **alerts}, refresh=False)
            wall = round(wall_offset + time.perf_counter() - started, 3)
            final = step == cfg.steps
            if step % cfg.log_every == 0 or final:
                last.update({k: float(np.mean(v)) for k, v in window.items()})
                records.append(log(log_path, {"step": step, "wall_s": wall, **{k: last[k] for k in window}}))
                window.clear()
                if recipe.stuck and abs(last[recipe.stuck]) < STUCK_LOSS:
                    raise TrainingError(f"{recipe.stuck} is stuck at {last[recipe.stuck]:.2g} over the {cfg.log_every} "
                                        f"steps before step {step}: the discriminator wins outright and the generator "
                                        f"gets no gradient; {_bad_loss_hint(cfg, saved_step, ckpt)}")
            if world.leader and (step % cfg.sample_every == 0 or final):
                if held_out_batches:
                    last.update(_evaluate_vae(model, held_out_batches, cfg.seed, device))
                    records.append(log(log_path, {"step": step, "wall_s": wall, "test_elbo": last["test_elbo"],
                                                   "test_bpd": last["test_bpd"]}))
                if recipe.monitor is None:
                    save_samples(model, run_dir / f"samples_{step:06d}.png", cfg.seed, recipe.samples, data)
                else:   # the monitor sees what the checkpoint holds: the generator average when there is one
                    with ema.swapped_in(model) if ema is not None else nullcontext(model) as shown:
                        found, warning = recipe.monitor(cfg, shown, data, step, run_dir, records)
                    last.update(found)
                    records.append(log(log_path, {"step": step, "wall_s": wall, **found}))
                    if warning:
                        records.append(event(log_path, step, wall, "warning: " + warning))
                        bar.write(f"warning at step {step}: {warning}", file=sys.stderr)
                        alerts["collapse"] = warning.split(":")[0]
                plot_curves(records, cfg.kind, run_dir / "curves.png")
            if step % cfg.checkpoint_every == 0 or final:
                bad = _non_finite_weight(model)
                if bad:
                    raise TrainingError(f"weights became non-finite ({bad}) at step {step}; "
                                        f"{_bad_loss_hint(cfg, saved_step, ckpt)}")
                if world.leader:
                    save_state(ckpt, model, optimizers, data.name, step, cfg, identity, wall, ema)
                saved_step = step
        distributed.barrier(world)  # every rank returns once rank 0's last checkpoint is on disk
    finally:
        bar.close()
        if joined:
            distributed.leave()
    return TrainResult(ckpt, step, last, time.perf_counter() - started)


def _open_data(cfg: TrainConfig, data):
    if data is None:
        data = open_data(cfg.data, image_size=cfg.image_size, labels=cfg.labels, seed=cfg.seed)
    if cfg.image_size is not None and data.image_size != cfg.image_size:
        raise InputError(f"image_size {cfg.image_size} was asked for but data set {data.name!r} is {data.image_size} px")
    batches = RECIPES[cfg.kind].real_batches(cfg)
    if data.size("train") < cfg.batch_size * batches:
        per_step = f" times {batches} critic steps" if batches > 1 else ""
        raise InputError(f"batch_size {cfg.batch_size}{per_step} is larger than {data.name!r}'s {data.size('train')} "
                         "training images; lower --batch-size")
    return data


def _data_fields(data) -> dict:
    """The model config fields a data set fixes: point data says so itself, images by their size."""
    return getattr(data, "model_fields", None) or {"image_size": data.image_size, "channels": data.channels}


def _make_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {str(run_dir)!r} is a file; give a folder for the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create run folder {str(run_dir)!r} ({e.strerror}); choose another --out") from None


def _build_model(cfg: TrainConfig, config):
    with torch.random.fork_rng(devices=[]):  # seeds the init without disturbing the caller's global RNG
        torch.manual_seed(cfg.seed)
        return RECIPES[cfg.kind].build(cfg, config)


def _optimizers(cfg: TrainConfig, model) -> list[torch.optim.Optimizer]:
    def adam(params, lr=None):
        # foreach: one call per update for all tensors, the same arithmetic as the per-tensor loop, fewer Python steps
        return torch.optim.Adam(params, lr=cfg.learning_rate if lr is None else lr, betas=RECIPES[cfg.kind].betas,
                                foreach=True)

    return RECIPES[cfg.kind].optimizers(cfg, model, adam)


def _run_identity(cfg: TrainConfig, model, data) -> dict:
    """What must be equal for a resumed run to be the same run (steps, out, logging cadence may change)."""
    identity = {"kind": cfg.kind, "data": data.name, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "lr": cfg.learning_rate, **{f"model.{k}": v for k, v in model.config.to_dict().items()}}
    if cfg.kind == "vae":
        identity["beta"] = float(cfg.beta)
        if cfg.kl_warmup:
            identity["kl_warmup"] = cfg.kl_warmup
    identity.update({name: getattr(cfg, name) for name in RECIPES[cfg.kind].run_fields})
    # only when on, so older runs resume; --g-ema is not here: the average only watches the training, it never
    # steers it, so a run may resume with another decay or none (training/ema.py)
    for name, off in (("d_lr", None), ("gan_loss", "ns"), ("r1", 0.0)):
        if getattr(cfg, name) != off:
            identity[name] = getattr(cfg, name)
    if cfg.kind == "prior" and cfg.lr_decay_start == 1:   # constant lr: what prior runs did before the decay
        identity.pop("lr_decay_start")
    return identity


def _noise_seed(seed: int, stream: int) -> int:
    return seed * 1_000_003 + stream


def _torch_generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_noise_seed(seed, stream))


def _to_model_range(images: np.ndarray, value_range: tuple[float, float], device) -> torch.Tensor:
    """uint8 [B, H, W, C] -> float32 [B, C, H, W] in the model's value range; points float32 [B, d] as they are."""
    if images.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)
    lo, hi = value_range
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).to(torch.float32)
    return (x * ((hi - lo) / 255.0) + lo).contiguous()


def _bad_loss_hint(cfg: TrainConfig, saved_step: int | None, ckpt: Path) -> str:
    kept = (f"kept the last good checkpoint at step {saved_step} ({ckpt})" if saved_step is not None
            else "no checkpoint was written yet")
    return f"{kept}; lower --lr (now {cfg.learning_rate:g}){RECIPES[cfg.kind].hint}"


def _non_finite_weight(model) -> str | None:
    """A finite loss can still be followed by an update that overflows; such weights are never saved."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


def _eval_batches(cfg: TrainConfig, data) -> list[np.ndarray]:
    """The fixed held-out batches: the first eval_batches * batch_size images of the test split."""
    if not RECIPES[cfg.kind].evaluates:
        return []
    n = min(data.size("test"), cfg.eval_batches * cfg.batch_size)
    return [data.get("test", np.arange(i, min(i + cfg.batch_size, n)))[0] for i in range(0, n, cfg.batch_size)]


@torch.no_grad()
def _evaluate_vae(model, batches: list[np.ndarray], seed: int, device) -> dict:
    """Held-out ELBO (beta = 1, the true bound) in nats per image, one posterior sample each, and bits/dim."""
    model.eval()
    noise = _torch_generator(seed, EVAL_STREAM)
    total, count = 0.0, 0
    for batch in batches:
        x = _to_model_range(batch, model.config.value_range, device)
        eps = torch.randn(x.shape[0], model.config.latent_dim, generator=noise).to(device)
        recon, kl = losses.vae_terms(model, x, eps)
        total += -(recon + kl).sum().item()
        count += x.shape[0]
    model.train()
    elbo = total / count
    if model.config.likelihood != "gaussian":  # a Bernoulli "likelihood" of grey values is no density: no bins
        return {"test_elbo": elbo}
    dims = int(np.prod(batches[0].shape[1:]))
    return {"test_elbo": elbo, "test_bpd": losses.bits_per_dim(elbo, dims, model.config.value_range)}
