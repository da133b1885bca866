"""Image files as the data loaders and the filter's folder source read them (latentforge.images.read_rgb):
every mode converted to the RGB a viewer shows, or refused in one line; a pixel limit against bombs."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from latentforge.errors import DataError
from latentforge.images import MAX_PIXELS, read_rgb
from latentforge.runtime.video import open_source
from latentforge.training.data.folder import load_image


def _rgb(path):
    return np.asarray(read_rgb(path))


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 128 * 257, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = _rgb(tmp_path / "deep.png")
    assert out.shape == (1, 4, 3) and out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out == out[..., :1]).all()


def test_palette_greyscale_and_bilevel_match_their_rgb(tmp_path):
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    Image.fromarray(rgb[..., 1]).save(tmp_path / "l.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "l.png"), np.repeat(rgb[..., 1:2], 3, axis=2))
    Image.fromarray(rgb[..., 1] > 127).save(tmp_path / "1.png")
    np.testing.assert_array_equal(_rgb(tmp_path / "1.png")[..., 0], np.where(rgb[..., 1] > 127, 255, 0))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_over_white(tmp_path, mode):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 40
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 0, 255, 128
    Image.fromarray(rgba, "RGBA").convert(mode).save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [255] * 3 and out[0, 1].tolist() == [40] * 3
    assert abs(int(out[1, 0, 0]) - round(40 * 128 / 255 + 255 * 127 / 255)) <= 1


def test_cmyk_jpeg_comes_back_close_to_its_rgb(tmp_path):
    rgb = np.full((16, 16, 3), (200, 60, 30), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert np.abs(_rgb(tmp_path / "c.jpg").astype(int) - rgb).max() <= 6


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width, height):
    """A few hundred bytes whose header claims width x height pixels: what a decompression bomb looks like."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(8000, 8000), (40000, 40000)])
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, size):
    """8000 x 8000 is over MAX_PIXELS but under Pillow's own limit; 40000 x 40000 is over both."""
    assert size[0] * size[1] > MAX_PIXELS
    (tmp_path / "bomb.png").write_bytes(_png_claiming(*size))
    with pytest.raises(DataError, match="over the limit|decompression bomb") as error:
        load_image(str(tmp_path / "bomb.png"), 16)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["t.png", "t.jpg"])
def test_truncated_files_are_refused_in_one_line(tmp_path, name):
    Image.fromarray(np.random.default_rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="cannot read image") as error:
        load_image(str(tmp_path / name), 16)
    assert "\n" not in str(error.value)


def test_only_the_formats_asked_for_are_opened(tmp_path):
    """A TIFF named .png is not decoded by Pillow's TIFF plug-in behind the loader's back."""
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "x.png", format="TIFF")
    with pytest.raises(DataError, match="as PNG/JPEG"):
        load_image(str(tmp_path / "x.png"), 16)


def test_the_filter_folder_source_reads_through_the_same_checks(tmp_path):
    (tmp_path / "a.png").write_bytes(_png_claiming(9000, 9000))
    with pytest.raises(DataError, match="over the limit"):
        next(iter(open_source(str(tmp_path))))


def test_the_servers_uploads_are_converted_as_files_are(tmp_path):
    """An uploaded 16-bit or transparent PNG comes out as read_rgb reads the same file (Pillow's own conversion
    clipped 16-bit values at 255 and dropped alpha); a TIFF is refused, whatever it holds."""
    import io

    from latentforge.errors import InputError
    from latentforge.runtime.server.codecs import decode_image

    deep = Image.fromarray(np.array([[0, 257, 128 * 257, 65535]], dtype=np.uint16))
    rgba = Image.fromarray(np.random.default_rng().integers(0, 256, (4, 5, 4), dtype=np.uint8), "RGBA")
    for name, image in (("deep.png", deep), ("alpha.png", rgba)):
        image.save(tmp_path / name)
        got = decode_image((tmp_path / name).read_bytes(), 1000)
        np.testing.assert_array_equal(got, _rgb(tmp_path / name))
    assert decode_image((tmp_path / "deep.png").read_bytes(), 1000)[0, :, 0].tolist() == [0, 1, 128, 255]
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tiff, format="TIFF")
    with pytest.raises(InputError, match="could not be decoded .*PNG or JPEG"):
        decode_image(tiff.getvalue(), 1000)
