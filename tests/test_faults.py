"""Faults while writing: a full disk during a checkpoint save or an export, and a kill during an export, leave
the previous file intact and nothing half-written where the output goes."""
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


def _disk_full_after(limit: int):
    """An `open` whose files take `limit` bytes and then fail with ENOSPC, as a full disk does."""
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            if self.written + len(data) > limit:
                self.f.write(bytes(data[:max(0, limit - self.written)]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
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
        with _disk_full_after(1000)(filename, "wb") as f:
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
    monkeypatch.setattr(latentforge.files, "open", _disk_full_after(20_000), raising=False)   # the graph is ~90 kB
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
