"""The fused ops: native kernels against their PyTorch reference on fresh random inputs, opcheck, gradients,
bad inputs, the build cache and the fallback when the native library cannot be built."""
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from latentforge import ops
from latentforge.errors import BackendUnavailable, InputError
from latentforge.images import from_uint8, to_uint8
from latentforge.ops_build import build_dir, cache_key, source_dir

TOLERANCE_ULP = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
SEED = random.SystemRandom().randrange(2**31)  # fresh inputs every run, reproducible from the failure message


@pytest.fixture(scope="session")
def native():
    """Build (or load from the cache) the native library once per session; the suite needs it."""
    try:
        info = ops.build()
    except BackendUnavailable as e:
        pytest.fail(f"the native ops must build on this machine: {e}")
    return info


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(SEED)


def randn(*shape, gen, dtype=torch.float32, noncontiguous=False):
    """A random tensor; noncontiguous gives a transposed or strided view of a larger one with the same values."""
    if not noncontiguous:
        return torch.randn(*shape, generator=gen).to(dtype)
    if len(shape) == 2 and random.Random(gen.initial_seed() + sum(shape)).random() < 0.5:
        return torch.randn(shape[::-1], generator=gen).to(dtype).t()
    return torch.randn(*shape[:-1], 2 * shape[-1], generator=gen).to(dtype)[..., ::2]


def reparam_inputs(b, d, h, gen, dtype=torch.float32, offset="row", noncontiguous=False):
    mu, logvar, eps = (randn(b, d, gen=gen, dtype=dtype, noncontiguous=noncontiguous) for _ in range(3))
    logvar = logvar * 0.5  # sigma around 1, as a trained encoder gives
    off = {"none": None, "row": randn(d, gen=gen, dtype=dtype, noncontiguous=noncontiguous),
           "full": randn(b, d, gen=gen, dtype=dtype, noncontiguous=noncontiguous)}[offset]
    weight = randn(h, d, gen=gen, dtype=dtype, noncontiguous=noncontiguous) / math.sqrt(d)
    bias = randn(h, gen=gen, dtype=dtype, noncontiguous=noncontiguous)
    return mu, logvar, eps, off, weight, bias


def bound(mu, logvar, eps, offset, weight, bias, temperature, out_ref):
    """Allowed |native - ref|: float32 summation-order error of the dot products, plus one rounding step of the
    output dtype (both sides round the same float32 value, which may straddle a rounding boundary)."""
    z, _ = ops._sample(mu, logvar, eps, offset, temperature)
    scale = z.abs() @ weight.float().abs().t() + bias.float().abs()
    return 1e-5 * scale + 1e-6 + TOLERANCE_ULP[mu.dtype] * out_ref.float().abs()


def check_parity(args, temperature, activation, message):
    got = ops.reparam_linear(*args[:3], args[4], args[5], offset=args[3], temperature=temperature,
                             activation=activation, impl="native")
    want = ops.reparam_linear(*args[:3], args[4], args[5], offset=args[3], temperature=temperature,
                              activation=activation, impl="ref")
    assert got.dtype == want.dtype and got.shape == want.shape, message
    err = (got.float() - want.float()).abs()
    allowed = bound(*args, temperature, want)
    assert not torch.isnan(got).any(), message
    worst = int(torch.argmax(err - allowed))
    assert bool((err <= allowed).all()), (f"{message}: |native - ref| = {err.flatten()[worst]:.3g} > "
                                          f"{allowed.flatten()[worst]:.3g} at flat index {worst}")


def test_sources_are_found_where_installed():
    root = source_dir()
    assert root.is_dir(), root
    assert {"ops.cpp", "ops_cuda.cu", "latentforge_ops.h"} <= {p.name for p in root.iterdir()}


def test_build_cache_is_keyed_by_sources_and_honours_torch_extensions_dir(monkeypatch, tmp_path):
    key = cache_key(cuda=False)
    assert key == cache_key(cuda=False) and key != cache_key(cuda=True)
    copy = tmp_path / "csrc"
    copy.mkdir()
    for p in source_dir().iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    (copy / "ops.cpp").write_text((copy / "ops.cpp").read_text() + "\n// changed\n")
    monkeypatch.setattr("latentforge.ops_build.source_dir", lambda: copy)
    assert cache_key(cuda=False) != key
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert build_dir(key) == tmp_path / f"latentforge-ops-{key}"


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reparam_linear_every_activation_and_dtype(native, rng, activation, dtype):
    for b, offset in ((5, "row"), (40, "full"), (3, "none")):  # the direct loop and the BLAS path
        args = reparam_inputs(b, 37, 70, rng, dtype, offset)
        check_parity(args, temperature=0.8, activation=activation,
                     message=f"seed {SEED}, B={b}, {dtype}, {activation}, offset {offset}")


def test_reparam_linear_parity_sweep(native, rng):
    """Random sizes across B 1..4096, D 1..512, H 1..8192 (capped work per case), odd sizes and the edges,
    with random views, offsets, activations, dtypes and temperatures."""
    pick = random.Random(SEED)
    sizes = [(1, 1, 1), (4096, 1, 1), (1, 512, 8192), (16, 16, 4096), (17, 16, 4096), (4096, 512, 3), (1, 3, 8191)]
    while len(sizes) < 40:
        b, d, h = pick.randint(1, 4096), pick.randint(1, 512), pick.randint(1, 8192)
        if b * d * h <= 4_000_000:
            sizes.append((b, d, h))
    for b, d, h in sizes:
        dtype = pick.choice([torch.float32, torch.float32, torch.float16, torch.bfloat16])
        offset, activation = pick.choice(["none", "row", "full"]), pick.choice(ops.ACTIVATIONS)
        noncontiguous, temperature = pick.random() < 0.5, pick.choice([0.0, 0.5, 1.0, 1.7])
        args = reparam_inputs(b, d, h, rng, dtype, offset, noncontiguous)
        check_parity(args, temperature=temperature, activation=activation,
                     message=f"seed {SEED}: B={b} D={d} H={h} {dtype} offset={offset} {activation} "
                             f"noncontiguous={noncontiguous} t={temperature}")


def test_reparam_linear_with_zero_noise_is_exactly_the_decoder_head(native, rng):
    """What the torch backend relies on: mu=z with t=0 gives linear(z) + act exactly as torch computes z."""
    z, _, _, _, weight, bias = reparam_inputs(1, 16, 64, rng)
    zero = torch.zeros(1, 16).expand(1, 16)
    got = ops.reparam_linear(z, zero, zero, weight, bias, temperature=0.0, impl="native")
    ref = ops.reparam_linear(torch.zeros_like(z), zero, z, weight, bias, temperature=1.0, impl="native")
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize("offset", ["none", "row", "full"])
def test_reparam_linear_opcheck(native, rng, offset):
    for dtype in (torch.float32, torch.bfloat16):
        mu, logvar, eps, off, weight, bias = reparam_inputs(6, 5, 7, rng, dtype, offset)
        for t in (mu, logvar, eps, off, weight, bias):
            if t is not None:
                t.requires_grad_(dtype == torch.float32)
        torch.library.opcheck(torch.ops.latentforge.reparam_linear.default,
                              (mu, logvar, eps, off, weight, bias, 0.9, "silu"))
    torch.library.opcheck(torch.ops.latentforge.reparam_linear.default,
                          (mu.detach(), logvar.detach(), eps.detach(), None, weight.detach(), None, 1.0, "relu"))


@pytest.mark.filterwarnings("ignore:Input #\\d requires gradient and is not a double")
@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
def test_reparam_linear_gradcheck(native, rng, activation):
    """float32 (the kernels have no float64), so central differences with eps 1e-3 and stated tolerances
    atol = rtol = 5e-3; inputs are redrawn until no pre-activation sits within 0.05 of a relu kink."""
    for _ in range(100):
        mu, logvar, eps, off, weight, bias = reparam_inputs(3, 4, 5, rng, offset="full")
        y = ops.reparam_linear(mu, logvar, eps, weight, bias, offset=off, temperature=0.7, impl="ref")
        if y.abs().min() > 0.05:
            break
    inputs = tuple(t.requires_grad_() for t in (mu, logvar, eps, off, weight, bias))

    def op(mu, logvar, eps, off, weight, bias):
        return ops.reparam_linear(mu, logvar, eps, weight, bias, offset=off, temperature=0.7,
                                  activation=activation, impl="native")

    assert torch.autograd.gradcheck(op, inputs, eps=1e-3, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("offset", ["row", "full"])
def test_reparam_linear_gradients_match_ref_autograd(native, rng, dtype, offset):
    args = reparam_inputs(33, 19, 45, rng, dtype, offset)
    grads = {}
    for impl in ("native", "ref"):
        leaves = [t.detach().clone().requires_grad_() for t in args]
        out = ops.reparam_linear(*leaves[:3], leaves[4], leaves[5], offset=leaves[3], temperature=1.3,
                                 activation="lrelu", impl=impl)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[impl] = [t.grad for t in leaves]
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
    for name, got, want in zip(("mu", "logvar", "eps", "offset", "weight", "bias"), *grads.values()):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol, msg=f"seed {SEED}: d{name}")


def test_reparam_linear_traces_through_torch_export(native, rng):
    mu, logvar, eps, off, weight, bias = reparam_inputs(4, 8, 16, rng)

    class Head(torch.nn.Module):
        def forward(self, mu, logvar, eps):
            return torch.ops.latentforge.reparam_linear(mu, logvar, eps, off, weight, bias, 1.0, "tanh")

    program = torch.export.export(Head(), (mu, logvar, eps))
    assert "latentforge.reparam_linear" in str(program.graph)
    torch.testing.assert_close(program.module()(mu, logvar, eps), Head()(mu, logvar, eps))


def image_inputs(gen, dtype, channels_last):
    b, c, h, w = (int(v) for v in torch.randint(1, 9, (4,), generator=gen))
    x = torch.rand(b, c, h, w, generator=gen) * 2.4 - 1.2  # beyond [-1, 1] on both sides: clamping
    x.view(-1)[torch.randint(0, x.numel(), (3,), generator=gen)] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    x.view(-1)[0] = 100.5 / 127.5 - 1  # exactly 100.5 after scaling in float32: rounds to even, 100
    x = x.to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_to_uint8_image_parity(native, rng, dtype, layout):
    for _ in range(5):
        x = image_inputs(rng, dtype, layout == "channels_last")
        if layout == "strided":
            x = torch.cat([x, x], dim=3)[..., ::2]
        got = ops.to_uint8_image(x, -1.0, 1.0, impl="native")
        assert got.dtype == torch.uint8 and got.shape == (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
        assert torch.equal(got, ops.to_uint8_image(x, -1.0, 1.0, impl="ref")), f"seed {SEED}"
        if dtype == torch.float32:  # the runtime's NumPy conversion is the contract at the edge
            assert np.array_equal(got.numpy(), to_uint8(x.numpy(), (-1.0, 1.0))), f"seed {SEED}"


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_from_uint8_image_parity(native, rng, layout):
    for lo, hi in ((0.0, 1.0), (-1.0, 1.0), (-3.5, 7.25)):
        x = torch.randint(0, 256, (3, 5, 7, 3), generator=rng, dtype=torch.uint8)
        if layout == "strided":
            x = x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
        got = ops.from_uint8_image(x, lo, hi, impl="native")
        assert got.dtype == torch.float32 and got.shape == (3, 3, 5, 7) and got.is_contiguous()
        torch.testing.assert_close(got, ops.from_uint8_image(x, lo, hi, impl="ref"), rtol=0, atol=1e-6)
        torch.testing.assert_close(got.numpy(), from_uint8(x.numpy(), (lo, hi)), rtol=0, atol=1e-6)


def test_image_ops_opcheck(native, rng):
    x = image_inputs(rng, torch.float32, False)
    torch.library.opcheck(torch.ops.latentforge.to_uint8_image.default, (x, -1.0, 1.0))
    u = torch.randint(0, 256, (2, 4, 3, 3), generator=rng, dtype=torch.uint8)
    torch.library.opcheck(torch.ops.latentforge.from_uint8_image.default, (u, 0.0, 1.0))


@pytest.mark.parametrize("impl", ["native", "ref"])
def test_bad_inputs_raise_one_line_input_errors(native, impl, rng):
    mu, logvar, eps, off, weight, bias = reparam_inputs(4, 3, 5, rng)
    bad = {
        "mu must be \\[B, D\\]": dict(mu=mu[0]),
        "logvar must be \\[B, D\\] = \\[4, 3\\]": dict(logvar=logvar[:2]),
        "weight must be \\[H, D\\] with D = 3": dict(weight=weight.t()),
        "offset must be \\[D\\] or \\[B, D\\]": dict(offset=torch.zeros(4)),
        "bias must be \\[H\\] with H = 5": dict(bias=bias[:4]),
        "eps is torch.float16 but mu is torch.float32": dict(eps=eps.half()),
        "weight is on meta but mu is on cpu": dict(weight=weight.to("meta")),
        "float32, float16 or bfloat16, got torch.float64": {k: v.double() for k, v in
                                                            dict(mu=mu, logvar=logvar, eps=eps, weight=weight,
                                                                 bias=bias, offset=off).items()},
        "activation must be one of": dict(activation="gelu"),
    }
    for match, change in bad.items():
        kwargs = dict(mu=mu, logvar=logvar, eps=eps, weight=weight, bias=bias, offset=off) | change
        with pytest.raises(InputError, match=match):
            ops.reparam_linear(**kwargs, impl=impl)
    with pytest.raises(InputError, match="finite with hi > lo"):
        ops.to_uint8_image(torch.zeros(1, 1, 2, 2), 1.0, 1.0, impl=impl)
    with pytest.raises(InputError, match="uint8 tensor \\[B, H, W, C\\]"):
        ops.from_uint8_image(torch.zeros(1, 2, 2, 1), 0.0, 1.0, impl=impl)
    with pytest.raises(InputError, match="impl must be one of"):
        ops.to_uint8_image(torch.zeros(1, 1, 2, 2), 0.0, 1.0, impl="cuda")


def test_native_op_checks_its_inputs_itself(native, rng):
    """Called directly, without the Python wrapper's checks, the kernels still refuse bad inputs."""
    mu, logvar, eps, off, weight, bias = reparam_inputs(4, 3, 5, rng)
    call = torch.ops.latentforge.reparam_linear
    with pytest.raises(RuntimeError, match="weight must be \\[H, D\\]"):
        call(mu, logvar, eps, off, weight.t().contiguous(), bias, 1.0, "none")
    with pytest.raises(RuntimeError, match="bias is Half but mu is Float"):
        call(mu, logvar, eps, off, weight, bias.half(), 1.0, "none")
    with pytest.raises(RuntimeError, match="activation must be one of"):
        call(mu, logvar, eps, off, weight, bias, 1.0, "gelu")
    with pytest.raises(RuntimeError, match="x must be \\[B, C, H, W\\]"):
        torch.ops.latentforge.to_uint8_image(torch.zeros(2, 2), 0.0, 1.0)
    with pytest.raises(RuntimeError, match="x must be uint8"):
        torch.ops.latentforge.from_uint8_image(torch.zeros(1, 2, 2, 1), 0.0, 1.0)


def test_importing_builds_nothing_and_first_use_loads_the_library(native):
    """The library is built on first use, so `import latentforge` (and loading a checkpoint) never waits on a
    compiler; checked in a fresh interpreter, where nothing has loaded it yet."""
    code = ("import torch, latentforge, latentforge.ops as ops\n"
            "assert ops.native.info is None and ops.native.error is None, 'loaded at import'\n"
            "assert not hasattr(torch.ops.latentforge, 'reparam_linear'), 'registered at import'\n"
            "ops.to_uint8_image(torch.zeros(1, 1, 2, 2), 0.0, 1.0, impl='auto')\n"
            "assert ops.native.info is not None, ops.native.error\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_one(native):
    """torch marks a build in progress with a plain lock file and waits for it without end; one left by a build
    killed half-way hung every later process that used the ops. A fresh process must build (load) past it."""
    lock = native.path.parent / "lock"
    lock.touch()
    try:
        done = subprocess.run([sys.executable, "-c", "from latentforge import ops; print(ops.build().path)"],
                              capture_output=True, text=True, timeout=600)
    finally:
        stale = lock.exists()
        lock.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(native.path) and not stale


def test_a_missing_compiler_is_named_before_anything_compiles(monkeypatch):
    from latentforge.ops_build import build

    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(BackendUnavailable, match="no C\\+\\+ compiler '/nonexistent/c\\+\\+' on PATH"):
        build()


def test_without_the_native_library_auto_warns_once_and_native_raises(native, monkeypatch, rng):
    def no_compiler(verbose=False):
        raise BackendUnavailable("no C++ compiler 'c++' on PATH; install g++ (or set CXX) to build them")

    monkeypatch.setattr(ops, "_build_library", no_compiler)
    monkeypatch.setattr(ops.native, "warned", False)
    monkeypatch.setattr(ops.native, "info", ops.native.info)
    monkeypatch.setattr(ops.native, "error", None)
    with pytest.raises(BackendUnavailable, match="no C\\+\\+ compiler"):
        ops.native.load()
    args = reparam_inputs(3, 4, 5, rng)
    with pytest.warns(RuntimeWarning, match="unavailable: no C\\+\\+ compiler.*using the PyTorch reference"):
        got = ops.reparam_linear(*args[:3], args[4], args[5], offset=args[3], impl="auto")
    torch.testing.assert_close(got, ops.reparam_linear_ref(*args, 1.0, "none"), rtol=0, atol=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        ops.to_uint8_image(torch.zeros(1, 1, 2, 2), 0.0, 1.0, impl="auto")
    with pytest.raises(BackendUnavailable, match="no C\\+\\+ compiler"):
        ops.to_uint8_image(torch.zeros(1, 1, 2, 2), 0.0, 1.0, impl="native")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_suite.sh on one)")
def test_cuda_parity(native, rng):
    assert native.cuda, "torch sees a GPU but the native library was built without CUDA (is CUDA_HOME set?)"
    pick = random.Random(SEED)
    for b, d, h in [(1, 1, 1), (1, 16, 4096), (17, 33, 65), (4096, 512, 257)] + [
            (pick.randint(1, 4096), pick.randint(1, 512), pick.randint(1, 8192)) for _ in range(20)]:
        dtype = pick.choice([torch.float32, torch.float16, torch.bfloat16])
        offset, activation = pick.choice(["none", "row", "full"]), pick.choice(ops.ACTIVATIONS)
        args = [None if t is None else t.cuda() for t in reparam_inputs(b, d, h, rng, dtype, offset, pick.random() < .5)]
        check_parity(args, temperature=0.9, activation=activation,
                     message=f"cuda seed {SEED}: B={b} D={d} H={h} {dtype} {offset} {activation}")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = image_inputs(rng, dtype, True).cuda()
        assert torch.equal(ops.to_uint8_image(x, -1, 1, impl="native").cpu(), ops.to_uint8_image_ref(x.cpu(), -1, 1))
    u = torch.randint(0, 256, (3, 5, 7, 3), generator=rng, dtype=torch.uint8)
    torch.testing.assert_close(ops.from_uint8_image(u.cuda(), 0, 1, impl="native").cpu(),
                               ops.from_uint8_image_ref(u, 0, 1), rtol=0, atol=1e-6)
    torch.library.opcheck(torch.ops.latentforge.reparam_linear.default,
                          tuple(t.cuda() if t is not None else None for t in reparam_inputs(5, 6, 7, rng)) + (1.0, "relu"))


def test_build_ops_command_says_where_and_how_long(native, capsys, monkeypatch):
    from latentforge.cli import main

    assert main(["build-ops"]) == 0
    out = capsys.readouterr().out
    assert str(native.path) in out and " s" in out

    def no_compiler(verbose=False):
        raise BackendUnavailable("no C++ compiler 'c++' on PATH; install g++ (or set CXX) to build them")

    monkeypatch.setattr("latentforge.ops_build.build", no_compiler)
    assert main(["build-ops"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no C++ compiler 'c++' on PATH" in err


@pytest.mark.parametrize("impl", ["native", "ref"])
def test_reparam_linear_stays_float32_under_autocast(native, rng, impl):
    """The torch backend calls it inside bf16 autocast; its arithmetic and output must not follow."""
    args = reparam_inputs(40, 16, 64, rng)
    plain = ops.reparam_linear(*args[:3], args[4], args[5], offset=args[3], activation="relu", impl=impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = ops.reparam_linear(*args[:3], args[4], args[5], offset=args[3], activation="relu", impl=impl)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain, rtol=0, atol=0)
