"""What every image model's config must satisfy, checked in one place."""
from latentforge.errors import InputError

IMAGE_SIZES = (32, 64, 128)
# A VAE may also be 256 px, for models built in code (the filter benchmark's); the data sets and `train` stop at 128
VAE_IMAGE_SIZES = IMAGE_SIZES + (256,)


def levels(image_size: int) -> int:
    """Stride-2 layers between a 4x4 map and the image: 32 -> 3, 64 -> 4, 128 -> 5, 256 -> 6."""
    return image_size.bit_length() - 3


def check_image_config(image_size, channels, latent_dim, sizes=IMAGE_SIZES) -> None:
    if image_size not in sizes:
        raise InputError(f"image_size must be one of {sizes}, got {image_size!r}")
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(latent_dim, int) or not 1 <= latent_dim <= 4096:
        raise InputError(f"latent_dim must be an integer in 1..4096, got {latent_dim!r}")
