"""What differs between model kinds in training: one Recipe per kind, named in RECIPES.

The loop in train.py is shared; a recipe (recipe.py) says how to build the model, which optimizers
it has, what one step does and (optionally) how to evaluate or picture it. A new kind adds a
Recipe in its own module here and one entry to RECIPES below.
"""
from __future__ import annotations

from .gan_encoder import GAN_ENCODER
from .gans import DCGAN, GAN, UNROLLED_GAN, WGAN_GP
from .recipe import NonFinite, Recipe
from .vae import VAE
from .vq import PRIOR, VQVAE

RECIPES: dict[str, Recipe] = {
    "vae": VAE,
    "dcgan": DCGAN,
    "vqvae": VQVAE,
    "prior": PRIOR,
    "gan": GAN,
    "wgan-gp": WGAN_GP,
    "unrolled-gan": UNROLLED_GAN,
    "gan-encoder": GAN_ENCODER,
}

__all__ = ["RECIPES", "NonFinite", "Recipe"]
