"""Engines verified before use: every exported graph carries a golden input and output (latentforge.golden), and
`load(..., verify=True)` refuses a file that does not reproduce them: a corrupted weight, another model's graph."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import latentforge
from latentforge.checkpoint import save_checkpoint
from latentforge.errors import CheckpointError
from latentforge.export import ExportOptions, export, export_precisions
from latentforge.golden import KEY, MAX_VALUES
from latentforge.models.vae import ConvVAE, VAEConfig
from latentforge.runtime.machine import installed

TINY_VAE = VAEConfig(base_channels=8, latent_dim=8, image_size=32)   # as conftest.py's vae_checkpoint


@pytest.fixture(scope="module")
def exported(vae_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    export_precisions(vae_checkpoint, {"fp32": folder / "vae.onnx", "fp16": folder / "vae.fp16.onnx"})
    return folder / "vae.onnx"


def _meta(proto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _rewrite(src, dst, change) -> None:
    proto = onnx.load(src)
    change(proto)
    onnx.save(proto, dst)


def test_the_golden_check_is_small_and_passes_at_each_precision(exported):
    golden = json.loads(_meta(onnx.load(exported))[KEY])
    assert set(golden["inputs"]) == {"z"} and golden["inputs"]["z"]["shape"] == [1, TINY_VAE.latent_dim]
    image = golden["outputs"]["image"]
    assert image["shape"] == [1, 3, 32, 32] and -(-3 * 32 * 32 // image["stride"]) <= MAX_VALUES
    assert len(_meta(onnx.load(exported))[KEY]) < 20_000
    for precision in ("fp32", "fp16"):
        model = latentforge.load(exported, backend="onnxruntime", precision=precision, verify=True)
        assert model.precision == precision


@pytest.mark.skipif(not installed("openvino"), reason="OpenVINO is an optional extra")
def test_openvino_bf16_hint_is_verified_at_bf16(exported):
    model = latentforge.load(exported, backend="openvino", precision="bf16", verify=True)
    assert model.precision in ("bf16", "fp32")   # fp32 where the CPU has no bf16 units


def test_a_corrupted_weight_initializer_is_refused(exported, tmp_path):
    def damage(proto):
        weights = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(weights).copy()
        values.reshape(-1)[:: 7] *= -3.0   # what a flipped sign bit or a bad sector does to some weights
        weights.CopyFrom(numpy_helper.from_array(values, weights.name))

    bad = tmp_path / "vae.onnx"
    _rewrite(exported, bad, damage)
    latentforge.load(bad, backend="onnxruntime").sample(1, seed=0)   # unverified, it loads and runs
    with pytest.raises(CheckpointError) as error:
        latentforge.load(bad, backend="onnxruntime", verify=True)
    message = str(error.value)
    assert "\n" not in message and "does not reproduce its golden output at fp32" in message
    assert "FAIL image[golden]" in message and "re-export" in message


def test_serve_verifies_before_it_serves(exported, tmp_path, monkeypatch, capsys):
    """`latentforge serve` loads with verify=True: the damaged graph above never reaches the port; --no-verify
    serves it as it is."""
    import latentforge.runtime.server as server
    from latentforge.cli import main

    bad = tmp_path / "vae.onnx"
    _rewrite(exported, bad, lambda proto: _scale_largest(proto, -3.0))
    served = []
    monkeypatch.setattr(server, "serve", lambda service, **kwargs: served.append(service))
    assert main(["serve", str(bad), "--backend", "onnxruntime", "--threads", "1"]) == 2
    assert "does not reproduce its golden output" in capsys.readouterr().err and not served
    assert main(["serve", str(bad), "--backend", "onnxruntime", "--threads", "1", "--no-verify"]) == 0
    assert len(served) == 1


def _scale_largest(proto, factor: float) -> None:
    weights = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weights).copy()
    values.reshape(-1)[:: 7] *= factor
    weights.CopyFrom(numpy_helper.from_array(values, weights.name))


def test_another_models_graph_under_this_metadata_is_refused(exported, tmp_path):
    """The same architecture with other weights: every shape and name fits, only the numbers betray it."""
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.safetensors", ConvVAE(TINY_VAE).eval(), data="random", step=0)
    other_onnx = export(other, tmp_path / "other.onnx", ExportOptions(slim=False)).path
    mine = _meta(onnx.load(exported))

    def take_my_metadata(proto):
        del proto.metadata_props[:]
        for key, value in mine.items():
            proto.metadata_props.add(key=key, value=value)

    mismatched = tmp_path / "mismatched.onnx"
    _rewrite(other_onnx, mismatched, take_my_metadata)
    latentforge.load(other_onnx, backend="onnxruntime", verify=True)   # with its own golden check it is fine
    with pytest.raises(CheckpointError, match="does not reproduce its golden output"):
        latentforge.load(mismatched, backend="onnxruntime", verify=True)


def test_a_graph_with_other_inputs_is_refused_in_one_line(exported, vae_checkpoint, tmp_path):
    """The filter graph under the decoder's golden check: its own inputs are not the golden ones."""
    filter_onnx = export(vae_checkpoint, tmp_path / "f.onnx", ExportOptions(part="filter", slim=False)).path
    golden = _meta(onnx.load(exported))[KEY]

    def swap(proto):
        next(p for p in proto.metadata_props if p.key == KEY).value = golden

    _rewrite(filter_onnx, tmp_path / "swapped.onnx", swap)
    latentforge.load(filter_onnx, backend="onnxruntime", verify=True)
    with pytest.raises(CheckpointError, match="failed on its own golden input") as error:
        latentforge.load(tmp_path / "swapped.onnx", backend="onnxruntime", verify=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value, says", [(None, "carries no golden input and output"),
                                         ('{"inputs": {"z": ', "malformed latentforge.golden"),
                                         ('{"inputs": {}, "outputs": {}, "peaks": {}, "tolerances": {}}',
                                          "malformed latentforge.golden"),
                                         ])
def test_a_missing_or_malformed_golden_check_is_refused_only_when_verifying(exported, tmp_path, value, says):
    def set_golden(proto):
        entries = [p for p in proto.metadata_props if p.key != KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(entries)
        if value is not None:
            proto.metadata_props.add(key=KEY, value=value)

    path = tmp_path / "vae.onnx"
    _rewrite(exported, path, set_golden)
    latentforge.load(path, backend="onnxruntime").sample(1, seed=0)
    with pytest.raises(CheckpointError, match=says):
        latentforge.load(path, backend="onnxruntime", verify=True)


def test_a_huge_shape_in_the_golden_check_is_refused_before_allocating(exported, tmp_path):
    def inflate(proto):
        entry = next(p for p in proto.metadata_props if p.key == KEY)
        golden = json.loads(entry.value)
        golden["outputs"]["image"]["shape"] = [1 << 40, 3, 32, 32]
        entry.value = json.dumps(golden)

    _rewrite(exported, tmp_path / "vae.onnx", inflate)
    with pytest.raises(CheckpointError, match="larger than a golden check holds"):
        latentforge.load(tmp_path / "vae.onnx", backend="onnxruntime", verify=True)


def test_a_checkpoint_needs_no_golden_check(vae_checkpoint):
    assert latentforge.load(vae_checkpoint, backend="torch", verify=True).sample(1, seed=0).shape == (1, 32, 32, 3)
