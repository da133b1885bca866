"""Faults while writing: a full disk during a checkpoint save, an export or a codec write (compress's stream,
decompress's images), and a kill during an export, leave the previous file intact and nothing half-written where
the output goes."""
import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

import latentforge.files
from latentforge.checkpoint import save_checkpoint
from latentforge.errors import InputError
from latentforge.export import export_onnx
from latentforge.models import ConvVAE, VAEConfig


def _disk_with(free: int, per_file: bool = False):
    """An `open` whose files fail with ENOSPC, as a full disk does, once `free` more bytes are written: shared by
    every file written, or (`per_file`) counted afresh for each file."""
    real_open = open
    shared = [free]

    class Full:
        def __init__(self, f):
            self.f, self.left = f, ([free] if per_file else shared)

        def write(self, data):
            data, left = bytes(data), self.left
            if len(data) > left[0]:
                self.f.write(data[:left[0]])
                left[0] = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            left[0] -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Full(f) if "w" in mode else f

    return full_open


def test_disk_full_during_a_checkpoint_save_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    old = ConvVAE(VAEConfig(base_channels=4, latent_dim=8, image_size=32))
    save_checkpoint(path, old, data="random", step=1)
    before = path.read_bytes()

    def half_written(tensors, filename, metadata=None):   # safetensors writes natively: fill its file halfway
        with _disk_with(1000, per_file=True)(filename, "wb") as f:
            f.write(b"\0" * 4096)

    monkeypatch.setattr("safetensors.torch.save_file", half_written)
    with pytest.raises(InputError, match=r"could not write .*model.safetensors.*ENOSPC.*unchanged") as error:
        save_checkpoint(path, ConvVAE(VAEConfig(base_channels=4, latent_dim=8, image_size=32)), data="x", step=2)
    assert "\n" not in str(error.value)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.safetensors"]
    assert torch.equal(load_file(path)["encoder.0.weight"], old.state_dict()["encoder.0.weight"])


def test_disk_full_during_an_export_keeps_the_old_graph(vae_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "vae.onnx"
    before = b"the graph an earlier export wrote"
    out.write_bytes(before)
    monkeypatch.setattr(latentforge.files, "open", _disk_with(20_000, per_file=True), raising=False)   # the graph is ~90 kB
    with pytest.raises(InputError, match="ENOSPC"):
        export_onnx(vae_checkpoint, out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["vae.onnx"]


def test_a_kill_during_an_export_leaves_no_file_at_out(vae_checkpoint, tmp_path):
    """SIGKILL at the last moment before the rename: the whole graph is in the temp file, none at OUT."""
    out = tmp_path / "vae.onnx"
    script = textwrap.dedent(f"""
        import os, signal
        import latentforge.files
        from latentforge.export import export_onnx

        latentforge.files.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        export_onnx({str(vae_checkpoint)!r}, {str(out)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    assert not out.exists()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".vae.onnx.")]
    assert len(left) == 1 and left[0].endswith(".tmp")   # the killed writer's whole graph, hidden
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:   # a live writer's (this process, another one) and one from another host or container: never touched
        tag, dead = latentforge.files._writer_tag(), left[0].split("-")[-1].split(".")[0]   # the killed one's pid
        keep = [f".vae.onnx.{tag}-{pid}.abcdefgh.tmp" for pid in (os.getpid(), live.pid)]
        keep.append(f".vae.onnx.{'0badc0de' if tag != '0badc0de' else '1badc0de'}-{dead}.abcdefgh.tmp")
        for name in keep:
            (tmp_path / name).write_bytes(b"being written")
        from latentforge.export import export_onnx

        export_onnx(vae_checkpoint, out)   # the next export to OUT removes the dead writer's temp file
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "vae.onnx"])
    finally:
        live.kill()
        live.wait()


def test_disk_full_during_a_codec_write_keeps_the_old_files_and_writes_none(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    from latentforge.cli import main
    from latentforge.models.prior import PriorConfig, VQPrior
    from latentforge.models.vqvae import VQVAEConfig

    torch.manual_seed(0)
    prior = VQPrior(PriorConfig(vqvae=VQVAEConfig(image_size=32, base_channels=8, codebook_size=16, code_dim=4,
                                                  downsample=3, res_blocks=1), width=16, layers=1, heads=2)).eval()
    ckpt = str(save_checkpoint(tmp_path / "prior.safetensors", prior, data="faces", step=0))
    inputs = []
    for i, image in enumerate(np.random.default_rng().integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)):
        Image.fromarray(image).save(tmp_path / f"in{i}.png")
        inputs.append(str(tmp_path / f"in{i}.png"))
    out, run = tmp_path / "x.lfz", ["--backend", "torch", "--threads", "1"]
    assert main(["compress", ckpt, *inputs, "-o", str(out), *run]) == 0
    before, files = out.read_bytes(), sorted(os.listdir(tmp_path))
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr("builtins.open", _disk_with(len(before) // 2))
        assert main(["compress", ckpt, *inputs[::-1], "-o", str(out), *run]) == 2
    error = capsys.readouterr().err.strip()
    assert "ENOSPC" in error and "x.lfz" in error and "\n" not in error
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == files

    # decompress writes its images all or none: a disk that fills in the third leaves the first two unwritten too
    (tmp_path / "ok").mkdir()
    assert main(["decompress", str(out), "-o", str(tmp_path / "ok"), "--model", ckpt, *run]) == 0
    sizes = [(tmp_path / "ok" / f"x_{i:04d}.png").stat().st_size for i in range(3)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x_0000.png").write_bytes(b"an earlier image")
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr("builtins.open", _disk_with(sizes[0] + sizes[1] + sizes[2] // 2))
        assert main(["decompress", str(out), "-o", str(tmp_path / "d"), "--model", ckpt, *run]) == 2
    error = capsys.readouterr().err.strip()
    assert "ENOSPC" in error and "x_0002.png" in error and "\n" not in error
    assert os.listdir(tmp_path / "d") == ["x_0000.png"]
    assert (tmp_path / "d" / "x_0000.png").read_bytes() == b"an earlier image"
